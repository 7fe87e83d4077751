"""Reading runs from MLflow for a report: what a target names, the runs, their metric histories."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from glamhpc.tracking.runs import PARENT_TAG, SWEEP_ROLE_TAG
from glamhpc.tracking.uri import TrackingError, client, probe, resolve_uri, sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

THROUGHPUT_KEYS = ("env_steps_per_s", "steps_per_s", "fps")
"""Metric names read for the steps/s column, first present wins (the trainer logs the first)."""
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def open_store(uri: str | None) -> tuple[str, MlflowClient]:
    """(resolved URI, client) for a command that only reads. A SQLite store that does not exist
    is an error: opening it would leave an empty mlflow.db in the working folder."""
    resolved = resolve_uri(uri)
    db = sqlite_path(resolved)
    if db is not None and not db.is_file():
        raise TrackingError(
            f"no MLflow tracking store at {db} (nothing was logged there): run from the folder "
            f"you trained in, or give the store with --uri or MLFLOW_TRACKING_URI"
        )
    probe(resolved)
    return resolved, client(resolved)


@dataclass
class RunData:
    """One run as the report needs it."""

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    latest: dict[str, float]
    latest_step: dict[str, int]
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return max(self.latest_step.values(), default=0)

    @property
    def steps_per_s(self) -> float | None:
        for key in THROUGHPUT_KEYS:
            if key in self.latest:
                return self.latest[key]
        return None


def run_data(run: Run) -> RunData:
    # The latest step of each metric is only in the proto form of a run.
    proto_metrics = run.to_proto().data.metrics
    return RunData(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id[:8],
        status=run.info.status,
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        latest=dict(run.data.metrics),
        latest_step={m.key: int(m.step) for m in proto_metrics},
    )


def experiment_names(mlflow_client: MlflowClient) -> list[str]:
    return sorted(e.name for e in mlflow_client.search_experiments())


def unknown_experiment(
    mlflow_client: MlflowClient, name: str, uri: str, hint: str = ""
) -> TrackingError:
    """The error for a misspelt experiment: it lists the existing ones."""
    names = experiment_names(mlflow_client)
    listing = ", ".join(names) if names else "none yet"
    return TrackingError(
        f"unknown experiment '{name}' at {uri}; existing experiments: {listing}{hint}"
    )


def search_all(
    mlflow_client: MlflowClient, experiment_ids: list[str], filter_string: str = ""
) -> list[Run]:
    """Every matching run, newest first, across result pages."""
    runs: list[Run] = []
    token = None
    while True:
        page = mlflow_client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def resolve_target(
    mlflow_client: MlflowClient, target: str, uri: str
) -> tuple[str, list[RunData], str | None]:
    """(experiment name, runs to report, parent run id) for an experiment name, a sweep's name
    (its parent run's name; the newest such sweep) or a run id (a parent reports its children)."""
    from mlflow.exceptions import MlflowException

    run = None
    if _RUN_ID.match(target):
        try:
            run = mlflow_client.get_run(target)
        except MlflowException:
            run = None
    exp = mlflow_client.get_experiment_by_name(target) if run is None else None
    if run is None and exp is None:
        run = _sweep_parent_named(mlflow_client, target)
    if run is not None:
        parent_id = run.info.run_id
        experiment = mlflow_client.get_experiment(run.info.experiment_id).name
        children = search_all(
            mlflow_client, [run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'"
        )
        if children:
            return experiment, [run_data(r) for r in children], parent_id
        return experiment, [run_data(run)], None
    if exp is None:
        hint = " (a sweep's name or parent run id works too)"
        raise unknown_experiment(mlflow_client, target, uri, hint)
    runs = [
        run_data(r)
        for r in search_all(mlflow_client, [exp.experiment_id])
        if r.data.tags.get(SWEEP_ROLE_TAG) != "parent"
    ]
    return exp.name, runs, None


def _sweep_parent_named(mlflow_client: MlflowClient, name: str) -> Run | None:
    if "'" in name:  # would break the filter string; no sweep is named like that
        return None
    ids = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not ids:
        return None
    found = mlflow_client.search_runs(
        ids,
        filter_string=f"tags.`{SWEEP_ROLE_TAG}` = 'parent' and attributes.run_name = '{name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0] if found else None


def load_histories(mlflow_client: MlflowClient, runs: list[RunData], metric: str) -> list[RunData]:
    """Fill each run's (steps, values) of ``metric``; runs without it are dropped."""
    out = []
    for run in runs:
        if metric not in run.latest:
            continue
        history = sorted(mlflow_client.get_metric_history(run.run_id, metric), key=lambda m: m.step)
        # NaN (an update without finished episodes) would poison the mean over seeds.
        history = [m for m in history if not math.isnan(m.value)]
        run.steps = [int(m.step) for m in history]
        run.values = [float(m.value) for m in history]
        if run.steps:
            out.append(run)
    return out
