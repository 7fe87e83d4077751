"""`glamhpc report`: a target's PNG, summary.md and summary.csv (plus the policy-evolution
figures of runs that logged probes); one run's curve from MLflow."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glamhpc.fsutil import atomic_write_text
from glamhpc.report.figure import draw_report
from glamhpc.report.groups import GroupSummary, distinct_seeds, group_runs, summarize_groups
from glamhpc.report.links import compare_runs_url
from glamhpc.report.loading import load_histories, open_store, resolve_target
from glamhpc.report.probes import draw_probe_figures
from glamhpc.report.stats import BANDS
from glamhpc.report.tables import groups_csv, groups_markdown
from glamhpc.tracking.curves import metric_label
from glamhpc.tracking.runs import LEGACY_METRIC_KEYS
from glamhpc.tracking.uri import TrackingError, client, resolve_uri, short_error
from glamhpc.ui.plots import DEFAULT_METRIC, plot_curves, smooth_window

if TYPE_CHECKING:
    from mlflow import MlflowClient


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
    notes: list[str] = field(default_factory=list)
    """Duplicate seeds collapsed or dropped (one line each)."""
    compare_url: str | None = None
    """The MLflow UI's compare view of the reported runs side by side."""
    probe_pngs: list[Path] = field(default_factory=list)
    """Policy-evolution figures (glamhpc.report.probes), one per group whose runs logged probes."""


def build_report(
    target: str,
    uri: str | None = None,
    group_by: str | None = None,
    out_dir: str | Path | None = None,
    metric: str = DEFAULT_METRIC,
    band_kind: str = "std",
    smooth: int = 1,
    log_to_parent: bool = True,
    duplicates: str = "refuse",
) -> ReportResult:
    """Write learning_curves.png, summary.md and summary.csv for ``target`` (an experiment name,
    a sweep's name or a run id; a sweep parent's id reports its children and logs the files to
    the parent) to ``out_dir``, by default reports/<sweep name> or reports/<experiment>.

    ``smooth`` is the trailing-mean window of the curves and of the final value (`--smooth`);
    ``band_kind`` one of glamhpc.report.stats.BANDS; ``duplicates`` what to do with different
    runs of one seed in a group ('refuse' or 'newest')."""
    if band_kind not in BANDS:
        raise TrackingError(f"--band must be one of {', '.join(BANDS)}, got '{band_kind}'")
    if duplicates not in ("refuse", "newest"):
        raise TrackingError(f"--duplicates must be 'refuse' or 'newest', got '{duplicates}'")
    resolved, mlflow_client = open_store(uri)
    experiment, runs, parent = resolve_target(mlflow_client, target, resolved)
    with_metric = load_histories(mlflow_client, runs, metric)
    if not with_metric:
        names = ", ".join(r.name for r in runs[:10]) or "no runs"
        raise TrackingError(f"no run of '{target}' logged '{metric}' (runs: {names})")
    groups = group_runs(with_metric, group_by)
    notes: list[str] = []
    # Grouped BY the seed, a group's runs are other settings of one seed: nothing to collapse.
    if not (group_by and "seed" in group_by.lower()):
        groups, notes = distinct_seeds(groups, duplicates)
    name = _report_name(mlflow_client, target, experiment, parent)
    out = Path(out_dir) if out_dir else Path("reports") / _safe_name(name)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "learning_curves.png"
    label = metric_label(metric)
    rows = summarize_groups(groups, band_kind, smooth)
    labels = draw_report(
        {k: [(r.steps, r.values) for r in v] for k, v in groups.items()},
        rows,
        png,
        metric_label=label,
        title=f"{name}: {label} vs frames",
        band_kind=band_kind,
        window=smooth,
    )
    kept = [r for v in groups.values() for r in v]
    url = compare_runs_url(
        resolved, [r.experiment_id for r in kept if r.experiment_id], [r.run_id for r in kept]
    )
    probe_pngs = draw_probe_figures(mlflow_client, groups, _probe_paths(out, groups), name)
    md = out / "summary.md"
    atomic_write_text(
        md,
        f"# {name}\n\n![learning curves](learning_curves.png)\n\n"
        + groups_markdown(rows, label)
        + "".join(f"\n- {n}" for n in notes)
        + f"\n\nCompare in MLflow: {url}\n"
        + "".join(f"\n![policy evolution]({p.name})\n" for p in probe_pngs),
    )
    csv_path = out / "summary.csv"
    atomic_write_text(csv_path, groups_csv(rows))
    if parent and log_to_parent:
        try:
            for path in (png, md, csv_path, *probe_pngs):
                mlflow_client.log_artifact(parent, str(path), "report")
        except Exception as exc:
            raise TrackingError(
                f"report written to {out} but not logged to run {parent}: {short_error(exc)}"
            ) from None
    return ReportResult(png, md, csv_path, rows, labels, parent, experiment, notes, url, probe_pngs)


def _probe_paths(out: Path, groups: Mapping[str, object]) -> dict[str, Path]:
    """probes.png for a single group, else probes_<group>.png each."""
    if len(groups) == 1:
        return {label: out / "probes.png" for label in groups}
    return {label: out / f"probes_{_safe_name(label)}.png" for label in groups}


def _report_name(
    mlflow_client: MlflowClient, target: str, experiment: str, parent: str | None
) -> str:
    """What the output folder is named after: the sweep (its parent run's name) for a sweep,
    the experiment for an experiment, else the target as given."""
    if parent:
        return mlflow_client.get_run(parent).info.run_name or parent[:8]
    return experiment if target == experiment else target


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
    history = mlflow_client.get_metric_history(run_id, metric)
    legacy = LEGACY_METRIC_KEYS.get(metric)
    if not history and legacy:  # logged before the key's rename
        history = mlflow_client.get_metric_history(run_id, legacy)
    history = sorted(history, key=lambda m: m.step)
    if not history:
        raise TrackingError(f"run {run_id} at {resolved} has no metric '{metric}'")
    name = mlflow_client.get_run(run_id).info.run_name or run_id[:8]
    steps = [m.step for m in history]
    path = Path(out)
    plot_curves(
        {name: [(steps, [m.value for m in history])]},
        path,
        metric=metric,
        title=f"{name}: {metric_label(metric)} vs frames",
        window=smooth_window(len(steps)) if smooth is None else smooth,
    )
    return path


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "report"
