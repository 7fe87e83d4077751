"""Reading runs from MLflow for a report: what a target names, the runs, their metric histories."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from glamhpc.tracking.runs import LEGACY_METRIC_KEYS, PARENT_TAG, SWEEP_ROLE_TAG
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
    experiment_id: str = ""
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    mean_steps_per_s: float | None = None
    """Mean of the run's throughput history (filled by load_histories)."""

    @property
    def frames(self) -> int:
        return max(self.latest_step.values(), default=0)

    def metric_key(self, metric: str) -> str | None:
        """The key this run logged ``metric`` under: itself, or its name before the rename
        (glamhpc.tracking.runs.LEGACY_METRIC_KEYS), so old runs stay reportable."""
        for key in (metric, LEGACY_METRIC_KEYS.get(metric)):
            if key is not None and key in self.latest:
                return key
        return None

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
        experiment_id=run.info.experiment_id,
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
    """(experiment name, runs to report, parent run id) for a run id (a parent reports its
    children), a sweep's name (its parent run's name; the newest such sweep) or an experiment
    name, tried in that order."""
    from mlflow.exceptions import MlflowException

    run = None
    if _RUN_ID.match(target):
        try:
            run = mlflow_client.get_run(target)
        except MlflowException:
            run = None
    # A sweep's name before an experiment's: a sweep logs to an experiment of its own name by
    # default, and `report SWEEP` must report (and log to) that sweep's parent.
    if run is None:
        run = _sweep_parent_named(mlflow_client, target)
    exp = mlflow_client.get_experiment_by_name(target) if run is None else None
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
    """Fill each run's (steps, values) of ``metric`` (or its legacy key) and its mean
    throughput; runs without the metric are dropped."""
    out = []
    for run in runs:
        key = run.metric_key(metric)
        if key is None:
            continue
        history = sorted(mlflow_client.get_metric_history(run.run_id, key), key=lambda m: m.step)
        # NaN (an update without finished episodes) would poison the mean over seeds.
        history = [m for m in history if not math.isnan(m.value)]
        run.steps = [int(m.step) for m in history]
        run.values = [float(m.value) for m in history]
        throughput = next((k for k in THROUGHPUT_KEYS if k in run.latest), None)
        if throughput is not None:
            rates = [m.value for m in mlflow_client.get_metric_history(run.run_id, throughput)]
            rates = [r for r in rates if math.isfinite(r)]
            run.mean_steps_per_s = sum(rates) / len(rates) if rates else None
        if run.steps:
            out.append(run)
    return out


COMPARE_URL_TAG = "glamhpc.compare_url"
"""Tag on a finished sweep's parent: the MLflow compare view of its children."""


def children_compare_url(parent_run_id: str, uri: str | None) -> str | None:
    """The compare-runs URL of a sweep parent's children (None when it has none); also set as
    the parent's COMPARE_URL_TAG when it fits in a tag."""
    from glamhpc.report.links import compare_runs_url
    from glamhpc.tracking.runs import MAX_TAG_VALUE

    resolved = resolve_uri(uri)
    mlflow_client = client(resolved)
    parent = mlflow_client.get_run(parent_run_id)
    children = search_all(
        mlflow_client, [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    )
    if not children:
        return None
    ids = sorted((r.info.run_name or "", r.info.run_id) for r in children)
    url = compare_runs_url(resolved, [parent.info.experiment_id], [i for _, i in ids])
    if len(url) <= MAX_TAG_VALUE:
        mlflow_client.set_tag(parent_run_id, COMPARE_URL_TAG, url)
    return url
