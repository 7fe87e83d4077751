"""Rank 0's MLflow run for a training run: its tags, start or resume, and the closing curve."""

from __future__ import annotations

import json
import os
import warnings

from glamhpc.config import Config, to_dict
from glamhpc.rundir import RunDir
from glamhpc.tracking import Tracker

#: tracking.log_checkpoints uploads checkpoints of models up to this size (flan-t5-base and below).
UPLOAD_CHECKPOINT_PARAMS = 300_000_000


def start_tracker(cfg: Config, run: RunDir, world_size: int) -> Tracker:
    """Create the run's MLflow run, or resume the one named in the run directory."""
    tags = {
        "model": cfg.model.name,
        "level": cfg.env.level,
        "seed": str(cfg.seed),
        "run_dir": str(run.path.resolve()),
        "checkpoints": str(run.checkpoints.resolve()),
        "world_size": str(world_size),
    }
    # Launchers (submit, sweep) describe the run through the environment of its ranks.
    extra = os.environ.get("GLAMHPC_RUN_TAGS")
    if extra:
        tags.update({str(k): str(v) for k, v in json.loads(extra).items()})
    return Tracker.start(
        run_dir=run.path,
        config=to_dict(cfg),
        experiment=cfg.experiment,
        uri=cfg.tracking.uri,
        run_name=run.name,
        tags=tags,
        parent_run_id=os.environ.get("GLAMHPC_PARENT_RUN_ID") or None,
    )


def log_curve(tracker: Tracker) -> None:
    try:
        tracker.log_learning_curve()
    except Exception as exc:  # a plot must never fail a finished run
        warnings.warn(f"could not render the learning curve: {exc}", stacklevel=2)


def finish_tracking(tracker: Tracker | None, cfg: Config, rundir: RunDir, preempted: bool) -> None:
    """Close a run's MLflow run at its end (rank 0): the exported model and the learning curve
    for a finished run, KILLED for a preempted one (it resumes into the same MLflow run)."""
    if tracker is None:
        return
    if not preempted and cfg.tracking.log_model:
        tracker.log_artifacts(rundir.model, "model")
    if not preempted:
        log_curve(tracker)
    tracker.finish("KILLED" if preempted else "FINISHED")
