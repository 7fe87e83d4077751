"""The rows of `glamhpc runs`: newest runs first, each sweep parent followed by its children."""

from __future__ import annotations

import math
from dataclasses import dataclass

from glamhpc.report.groups import natural_key
from glamhpc.report.loading import open_store, run_data, unknown_experiment
from glamhpc.tracking.runs import JOB_STATE_TAG, PARENT_TAG, SWEEP_ROLE_TAG
from glamhpc.ui.plots import DEFAULT_METRIC


@dataclass
class RunRow:
    """A line of `glamhpc runs`."""

    experiment: str
    name: str
    run_id: str
    status: str
    frames: int
    latest: float | None
    best: float | None
    steps_per_s: float | None
    job_state: str
    parent: str | None


def list_runs(
    experiment: str | None = None,
    uri: str | None = None,
    limit: int = 50,
    metric: str = DEFAULT_METRIC,
) -> tuple[str, list[RunRow]]:
    """(resolved URI, newest runs first) of one experiment or of all experiments."""
    resolved, mlflow_client = open_store(uri)
    if experiment:
        exp = mlflow_client.get_experiment_by_name(experiment)
        if exp is None:
            raise unknown_experiment(mlflow_client, experiment, resolved)
        exps = {exp.experiment_id: exp.name}
    else:
        exps = {e.experiment_id: e.name for e in mlflow_client.search_experiments()}
    if not exps:
        return resolved, []
    runs = mlflow_client.search_runs(
        list(exps), max_results=limit, order_by=["attributes.start_time DESC"]
    )
    rows = []
    for run in runs:
        data = run_data(run)
        best = None
        key = data.metric_key(metric)
        if key is not None:
            history = mlflow_client.get_metric_history(data.run_id, key)
            finite = [m.value for m in history if not math.isnan(m.value)]
            best = max(finite) if finite else None
        state = data.tags.get(JOB_STATE_TAG) or "-"
        if data.tags.get(SWEEP_ROLE_TAG) == "parent":
            state = f"{state} (sweep)"
        rows.append(
            RunRow(
                experiment=exps.get(run.info.experiment_id, run.info.experiment_id),
                name=data.name,
                run_id=data.run_id,
                status=data.status,
                frames=data.frames,
                latest=data.latest.get(key) if key else None,
                best=best,
                steps_per_s=data.steps_per_s,
                job_state=state,
                parent=data.tags.get(PARENT_TAG),
            )
        )
    return resolved, _nest(rows)


def _nest(rows: list[RunRow]) -> list[RunRow]:
    """Newest first, each sweep parent directly followed by its children (sorted by name)."""
    ids = {r.run_id for r in rows}
    children: dict[str, list[RunRow]] = {}
    for row in rows:
        if row.parent in ids:
            children.setdefault(row.parent, []).append(row)
    out: list[RunRow] = []
    for row in rows:
        if row.parent in ids:
            continue
        out.append(row)
        out.extend(sorted(children.get(row.run_id, []), key=lambda r: natural_key(r.name)))
    return out
