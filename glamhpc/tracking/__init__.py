"""Experiment tracking in MLflow (rank 0 only): complete runs, sweeps, outage-proof logging.

Public API::

    from glamhpc.tracking import Tracker
    tracker = Tracker.start(run_dir, config_dict, experiment, uri, run_name, tags,
                            parent_run_id=None)       # creates, or resumes run_dir/mlflow_run_id
    tracker.log_metrics({"success_rate": 0.4, ...}, step=frames)   # microseconds, never blocks
    tracker.log_artifacts(run_dir / "model", "model")
    tracker.log_learning_curve("success_rate")       # PNG from the local journal
    tracker.finish("FINISHED")                         # or FAILED / KILLED (preempted, resumable)

    parent = create_parent_run(experiment, "sweep-name", uri, params, tags)   # sweeps
    Tracker.start(..., tags=sweep_tags({"ppo.lr": 1e-4, "seed": 2}), parent_run_id=parent)
    finalize_parent(parent, "FINISHED")

    sync_run_dir(run_dir)                              # `glamhpc sync RUN_DIR`
    tracking_uri(cfg)                                  # the URI a Config's runs log to

Modules: ``uri`` (where runs go), ``runs`` (creating runs, sweeps), ``start`` (create or resume a
run directory's run), ``tracker`` (the Tracker), ``journal`` / ``sender`` (outage-proof
delivery), ``diagnose`` (backoff and what a failure means), ``handover`` (runs left undelivered
by their job, completed by `runs`/`report`/`sweep` or the sweep finalizer), ``sync``
(`glamhpc sync`), ``curves`` (the learning-curve artifact), ``lock``,
``system``, ``server`` (`glamhpc tracking-server`), ``evals`` (what `glamhpc eval` asks of
MLflow).
Design and guarantees: docs/TRACKING.md, journal.py and sender.py.
"""

from glamhpc.tracking.journal import JOURNAL, RUN_ID_FILE, metric_series
from glamhpc.tracking.runs import (
    JOB_STATE_TAG,
    PARENT_TAG,
    SWEEP_ROLE_TAG,
    SWEEP_TAG_PREFIX,
    TRUNCATED,
    create_parent_run,
    finalize_parent,
    sweep_tags,
)
from glamhpc.tracking.start import read_run_id
from glamhpc.tracking.sync import sync_run_dir
from glamhpc.tracking.tracker import Tracker
from glamhpc.tracking.uri import TrackingError, resolve_uri, tracking_uri

__all__ = [
    "JOB_STATE_TAG",
    "JOURNAL",
    "PARENT_TAG",
    "RUN_ID_FILE",
    "SWEEP_ROLE_TAG",
    "SWEEP_TAG_PREFIX",
    "TRUNCATED",
    "Tracker",
    "TrackingError",
    "create_parent_run",
    "finalize_parent",
    "metric_series",
    "read_run_id",
    "resolve_uri",
    "sweep_tags",
    "sync_run_dir",
    "tracking_uri",
]
