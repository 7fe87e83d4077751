"""`glamhpc report`: a target's PNG, summary.md and summary.csv; one run's curve from MLflow."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from glamhpc.report.groups import GroupSummary, group_runs, summarize_groups
from glamhpc.report.loading import load_histories, open_store, resolve_target
from glamhpc.report.tables import groups_csv, groups_markdown
from glamhpc.tracking.uri import TrackingError, client, resolve_uri, short_error
from glamhpc.ui.plots import DEFAULT_METRIC, plot_curves, smooth_window


@dataclass
class ReportResult:
    png: Path
    markdown: Path
    csv: Path
    rows: list[GroupSummary]
    labels: list[str]
    """Legend entries of the PNG, one per curve."""
    parent_run_id: str | None
    experiment: str


def build_report(
    target: str,
    uri: str | None = None,
    group_by: str | None = None,
    out_dir: str | Path | None = None,
    metric: str = DEFAULT_METRIC,
    spread: str = "std",
    smooth: int = 1,
    log_to_parent: bool = True,
) -> ReportResult:
    """Write learning_curves.png, summary.md and summary.csv for ``target`` (an experiment name
    or a run id; a sweep parent's id reports its children and logs the files to the parent).

    ``smooth`` is the trailing-mean window of the curves (`--smooth`)."""
    if spread not in ("std", "minmax"):
        raise TrackingError(f"--spread must be 'std' or 'minmax', got '{spread}'")
    resolved, mlflow_client = open_store(uri)
    experiment, runs, parent = resolve_target(mlflow_client, target, resolved)
    with_metric = load_histories(mlflow_client, runs, metric)
    if not with_metric:
        names = ", ".join(r.name for r in runs[:10]) or "no runs"
        raise TrackingError(f"no run of '{target}' logged '{metric}' (runs: {names})")
    groups = group_runs(with_metric, group_by)
    out = (
        Path(out_dir)
        if out_dir
        else Path("reports") / _safe_name(target if not parent else experiment + "-" + parent[:8])
    )
    out.mkdir(parents=True, exist_ok=True)
    png = out / "learning_curves.png"
    title = f"{experiment}: {metric.replace('_', ' ')} vs frames"
    labels = plot_curves(
        {k: [(r.steps, r.values) for r in v] for k, v in groups.items()},
        png,
        metric=metric,
        title=title,
        spread=spread,
        window=smooth,
    )
    rows = summarize_groups(groups)
    md = out / "summary.md"
    md.write_text(
        f"# {experiment}\n\n![learning curves](learning_curves.png)\n\n"
        + groups_markdown(rows, metric)
    )
    csv_path = out / "summary.csv"
    csv_path.write_text(groups_csv(rows))
    if parent and log_to_parent:
        try:
            for path in (png, md, csv_path):
                mlflow_client.log_artifact(parent, str(path), "report")
        except Exception as exc:
            raise TrackingError(
                f"report written to {out} but not logged to run {parent}: {short_error(exc)}"
            ) from None
    return ReportResult(png, md, csv_path, rows, labels, parent, experiment)


def learning_curve_png(
    run_id: str,
    out: str | Path,
    uri: str | None = None,
    metric: str = DEFAULT_METRIC,
    smooth: int | None = None,
) -> Path:
    """One run's ``metric`` vs frames from MLflow as a PNG (the Tracker draws the same picture
    from its local journal at the end of training, without a server round trip).

    ``smooth`` is the trailing-mean window; None picks it from the number of points."""
    resolved = resolve_uri(uri)
    mlflow_client = client(resolved)
    history = sorted(mlflow_client.get_metric_history(run_id, metric), key=lambda m: m.step)
    if not history:
        raise TrackingError(f"run {run_id} at {resolved} has no metric '{metric}'")
    name = mlflow_client.get_run(run_id).info.run_name or run_id[:8]
    steps = [m.step for m in history]
    path = Path(out)
    plot_curves(
        {name: [(steps, [m.value for m in history])]},
        path,
        metric=metric,
        title=f"{name}: {metric.replace('_', ' ')} vs frames",
        window=smooth_window(len(steps)) if smooth is None else smooth,
    )
    return path


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "report"
