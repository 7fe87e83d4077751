"""What `glamhpc eval` asks of MLflow: read a training run, fetch its model, log an evaluation.

The evaluation package never talks to an MLflow client itself; these functions do, with the
store probed first so an unreachable server fails in one line instead of after MLflow's
retries. MLflow is imported only inside the functions (`glamhpc --help` stays fast).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from glamhpc.tracking.runs import MAX_METRICS_PER_BATCH, get_or_create_experiment
from glamhpc.tracking.uri import TrackingError, client, probe, short_error

__all__ = [
    "EvalLog",
    "RunNotFoundError",
    "TrainedRun",
    "download_artifacts",
    "log_evaluation",
    "read_run",
]

#: Params of a new eval run are cut here: they are short labels (suites, seeds, agent names).
_PARAM_CHARS = 500


class RunNotFoundError(TrackingError):
    """The store answers but has no run with that id (the message names the id and the store)."""


@dataclass(frozen=True)
class TrainedRun:
    """What evaluation needs to know about an MLflow run: its name and tags."""

    run_id: str
    name: str
    tags: dict[str, str] = field(default_factory=dict)


def read_run(uri: str, run_id: str) -> TrainedRun:
    """The run ``run_id`` of the store at ``uri``.

    Raises:
        TrackingError: the store cannot be reached (one line).
        RunNotFoundError: no such run there.
    """
    probe(uri)
    try:
        run = client(uri).get_run(run_id)
    except Exception as exc:  # MlflowException: RESOURCE_DOES_NOT_EXIST and friends
        raise RunNotFoundError(f"no MLflow run {run_id!r} at {uri} ({short_error(exc)})") from None
    return TrainedRun(str(run.info.run_id), str(run.info.run_name or ""), dict(run.data.tags))


def download_artifacts(uri: str, run_id: str, artifact_path: str, dest: Path) -> bool:
    """Copy the run's artifact folder ``artifact_path`` into ``dest`` (created); False when the
    run has no such artifact (the caller knows why that matters and says so)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        client(uri).download_artifacts(run_id, artifact_path, str(dest))
    except Exception:  # MLflow raises several types for "no such artifact"
        return False
    return True


@dataclass(frozen=True)
class EvalLog:
    """One evaluation to log.

    Attributes:
        metrics: name -> value, all logged at ``step``.
        step: the MLflow step (a checkpoint's training frames; 0 for models and baselines).
        tags: set on the run, whether it is new or the training run.
        files: logged as artifacts under ``artifact_path``.
        params: logged only on a new eval run (a training run's params are its config).
        run_name: name of a new eval run.
    """

    metrics: Mapping[str, float]
    step: int
    tags: Mapping[str, str]
    files: Sequence[Path]
    artifact_path: str
    params: Mapping[str, object] = field(default_factory=dict)
    run_name: str = "eval"


def log_evaluation(uri: str, log: EvalLog, run_id: str | None, experiment: str) -> str:
    """Log ``log`` into the run ``run_id``, or into a new FINISHED run of ``experiment`` when
    ``run_id`` is None; returns the run id used.

    Raises:
        TrackingError: the store cannot be reached or the experiment cannot be used (one line).
    """
    from mlflow.entities import Metric, Param, RunTag

    probe(uri)
    mlflow = client(uri)
    now = int(time.time() * 1000)
    values = [Metric(k, float(v), now, log.step) for k, v in sorted(log.metrics.items())]
    target = run_id
    if target is None:
        experiment_id = get_or_create_experiment(mlflow, experiment, uri)
        target = str(mlflow.create_run(experiment_id, run_name=log.run_name).info.run_id)
        params = [Param(k, str(v)[:_PARAM_CHARS]) for k, v in log.params.items()]
        mlflow.log_batch(target, params=params)
    # MLflow caps a batch at 1000 metrics; a paper suite logs ~110.
    for i in range(0, len(values), MAX_METRICS_PER_BATCH):
        mlflow.log_batch(target, metrics=values[i : i + MAX_METRICS_PER_BATCH])
    mlflow.log_batch(target, tags=[RunTag(k, str(v)) for k, v in log.tags.items()])
    for path in log.files:
        mlflow.log_artifact(target, str(path), artifact_path=log.artifact_path)
    if run_id is None:
        mlflow.set_terminated(target, "FINISHED")
    return target
