"""Learning curves and comparison tables from MLflow (``glamhpc report`` / ``glamhpc runs``).

A report reads the runs of an experiment, or the children of a sweep's parent run, groups them
(by default by their swept values minus the seed, so seeds of one setting form one group), and
renders:

* a PNG: success rate vs environment frames, one line per group (mean over the group's runs) with
  a band for the spread (std or min-max);
* a summary table as markdown and CSV: group, n seeds, final success mean ± std, best of the mean
  curve, frames, env steps/s.

For a sweep the three files are also logged to the parent run (artifact folder ``report/``), so the
picture lives next to the runs in the MLflow UI.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glamhpc.tracking.runs import PARENT_TAG, SWEEP_ROLE_TAG, SWEEP_TAG_PREFIX
from glamhpc.tracking.uri import TrackingError, client, probe, resolve_uri, short_error

DEFAULT_METRIC = "success_rate"
THROUGHPUT_KEYS = ("env_steps_per_s", "steps_per_s", "fps")
"""Metric names read for the steps/s column, first present wins (the trainer logs the first)."""
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")

Curve = tuple[Sequence[float], Sequence[float]]


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


@dataclass
class GroupSummary:
    group: str
    n: int
    final_mean: float
    final_std: float
    best: float
    frames: float
    steps_per_s: float | None


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


# ----------------------------------------------------------------------------- reading


def _run_data(run: Any) -> RunData:
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


def experiment_names(mlflow_client: Any) -> list[str]:
    return sorted(e.name for e in mlflow_client.search_experiments())


def _unknown_experiment(mlflow_client: Any, name: str, uri: str, hint: str = "") -> TrackingError:
    names = experiment_names(mlflow_client)
    listing = ", ".join(names) if names else "none yet"
    return TrackingError(
        f"unknown experiment '{name}' at {uri}; existing experiments: {listing}{hint}"
    )


def _search_all(mlflow_client: Any, experiment_ids: list[str], filter_string: str = "") -> list:
    runs: list[Any] = []
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
    mlflow_client: Any, target: str, uri: str
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
        children = _search_all(
            mlflow_client, [run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'"
        )
        if children:
            return experiment, [_run_data(r) for r in children], parent_id
        return experiment, [_run_data(run)], None
    if exp is None:
        hint = " (a sweep's name or parent run id works too)"
        raise _unknown_experiment(mlflow_client, target, uri, hint)
    runs = [
        _run_data(r)
        for r in _search_all(mlflow_client, [exp.experiment_id])
        if r.data.tags.get(SWEEP_ROLE_TAG) != "parent"
    ]
    return exp.name, runs, None


def _sweep_parent_named(mlflow_client: Any, name: str) -> Any:
    if "'" in name:
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


def load_histories(mlflow_client: Any, runs: list[RunData], metric: str) -> list[RunData]:
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


# ----------------------------------------------------------------------------- grouping


def group_value(run: RunData, key: str) -> str | None:
    """The value of ``key`` for a run: sweep tag, then param, then tag (``params.``/``tags.``
    prefixes force one source)."""
    if key.startswith("params."):
        return run.params.get(key[len("params.") :])
    if key.startswith("tags."):
        return run.tags.get(key[len("tags.") :])
    for source in (run.tags.get(SWEEP_TAG_PREFIX + key), run.params.get(key), run.tags.get(key)):
        if source is not None:
            return source
    return None


def default_group_keys(runs: Sequence[RunData]) -> list[str]:
    """Swept keys that differ between runs, minus seeds: seeds are what a group averages over."""
    keys: set[str] = set()
    for run in runs:
        keys.update(k[len(SWEEP_TAG_PREFIX) :] for k in run.tags if k.startswith(SWEEP_TAG_PREFIX))
    # `sweep.index` (set by glamhpc.launch.sweep) is unique per child: never a grouping key.
    keys = {k for k in keys if "seed" not in k.lower() and k != "index"}
    return sorted(k for k in keys if len({group_value(r, k) for r in runs}) > 1)


def group_runs(runs: Sequence[RunData], group_by: str | None) -> dict[str, list[RunData]]:
    """Label -> runs. Without ``group_by``: the default sweep keys, else one group per run."""
    keys = [k.strip() for k in group_by.split(",")] if group_by else default_group_keys(runs)
    groups: dict[str, list[RunData]] = {}
    if not keys:
        for run in runs:
            groups.setdefault(run.name, []).append(run)
        return groups
    if group_by and all(group_value(r, k) is None for r in runs for k in keys):
        known = sorted({*(k for r in runs for k in r.params), *(k for r in runs for k in r.tags)})
        raise TrackingError(
            f"no run has '{group_by}' as a param or tag; try one of: "
            + ", ".join(k for k in known if not k.startswith("mlflow."))[:600]
        )
    for run in runs:
        parts = [f"{_short_key(k)}={group_value(run, k)}" for k in keys]
        groups.setdefault(", ".join(parts), []).append(run)
    return dict(sorted(groups.items(), key=lambda kv: _natural(kv[0])))


def _short_key(key: str) -> str:
    for prefix in ("params.", "tags."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _natural(text: str) -> list[Any]:
    """Sort key putting lr=1e-05 before lr=0.0001 and seed=2 before seed=10."""
    out: list[Any] = []
    for part in re.split(r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)", text):
        try:
            out.append((0, float(part)))
        except ValueError:
            out.append((1, part))
    return out


# ----------------------------------------------------------------------------- numbers


def _smooth(values: Any, window: int) -> Any:
    import numpy as np

    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < 2:
        return values
    # Trailing mean (no look-ahead): point i averages the last `window` points up to i.
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (cumsum[idx] - cumsum[lo]) / (idx - lo)


def aggregate(
    curves: Sequence[Curve], spread: str = "std", smooth: int = 1
) -> tuple[Any, Any, Any, Any]:
    """(x, mean, low, high) of several runs' curves on a common step grid.

    Runs of one setting log at the same frames, but a run that stopped early (or a different
    num_envs) would not: every curve is interpolated onto the union of steps, limited to the range
    all runs cover, so the mean never mixes in extrapolated values.
    """
    import numpy as np

    curves = [(np.asarray(s, float), _smooth(v, smooth)) for s, v in curves if len(s)]
    if not curves:
        raise ValueError("no points to aggregate")
    lo_x = max(s[0] for s, _ in curves)
    hi_x = min(s[-1] for s, _ in curves)
    grid = np.unique(np.concatenate([s for s, _ in curves]))
    grid = grid[(grid >= lo_x) & (grid <= hi_x)] if hi_x >= lo_x else grid
    stack = np.stack([np.interp(grid, s, v) for s, v in curves])
    mean = stack.mean(axis=0)
    if spread == "minmax":
        return grid, mean, stack.min(axis=0), stack.max(axis=0)
    std = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.zeros_like(mean)
    return grid, mean, mean - std, mean + std


def summarize(groups: Mapping[str, Sequence[RunData]]) -> list[GroupSummary]:
    import numpy as np

    rows = []
    for label, runs in groups.items():
        finals = np.array([r.values[-1] for r in runs if r.values], dtype=float)
        _, mean_curve, _, _ = aggregate([(r.steps, r.values) for r in runs])
        sps = [r.steps_per_s for r in runs if r.steps_per_s is not None]
        rows.append(
            GroupSummary(
                group=label,
                n=len(runs),
                final_mean=float(finals.mean()),
                final_std=float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
                best=float(np.max(mean_curve)),
                frames=float(np.mean([r.steps[-1] for r in runs])),
                steps_per_s=float(np.mean(sps)) if sps else None,
            )
        )
    return rows


def _fmt_frames(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.0f}"


def to_markdown(rows: Sequence[GroupSummary], metric: str = DEFAULT_METRIC) -> str:
    head = (
        f"| group | n seeds | final {metric} (mean ± std) | best (mean curve) | frames | "
        f"env steps/s |\n|---|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r.group} | {r.n} | {r.final_mean:.3f} ± {r.final_std:.3f} | {r.best:.3f} | "
        f"{_fmt_frames(r.frames)} | "
        f"{'-' if r.steps_per_s is None else f'{r.steps_per_s:.1f}'} |\n"
        for r in rows
    )
    return head + body


def to_csv(rows: Sequence[GroupSummary]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["group", "n_seeds", "final_mean", "final_std", "best", "frames", "steps_per_s"]
    )
    for r in rows:
        writer.writerow(
            [r.group, r.n, f"{r.final_mean:.6g}", f"{r.final_std:.6g}", f"{r.best:.6g}",
             f"{r.frames:.0f}", "" if r.steps_per_s is None else f"{r.steps_per_s:.6g}"]
        )  # fmt: skip
    return buf.getvalue()


# ----------------------------------------------------------------------------- plotting


def plot_curves(
    groups: Mapping[str, Sequence[Curve]],
    out: Path,
    metric: str = DEFAULT_METRIC,
    title: str | None = None,
    spread: str = "std",
    smooth: int = 1,
) -> list[str]:
    """Draw one mean line (+ spread band when n > 1) per group; returns the legend labels."""
    import matplotlib

    matplotlib.use("Agg")  # headless (login/compute nodes); must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=120, layout="constrained")
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors
    labels: list[str] = []
    show_n = any(len(c) > 1 for c in groups.values())  # "(n=1)" on every line is only noise
    for i, (label, curves) in enumerate(groups.items()):
        curves = [c for c in curves if len(c[0])]
        if not curves:
            continue
        color = colors[i % len(colors)]
        x, mean, low, high = aggregate(curves, spread=spread, smooth=smooth)
        n = len(curves)
        text = f"{label}  (n={n})" if show_n else label
        marker = "o" if len(x) <= 12 else None
        if smooth > 1:
            # The raw mean stays visible, faint, so smoothing never hides a collapse.
            raw_x, raw_mean, _, _ = aggregate(curves, spread=spread)
            ax.plot(raw_x, raw_mean, color=color, lw=0.8, alpha=0.35)
        ax.plot(x, mean, color=color, lw=2.0, label=text, marker=marker, ms=4)
        if n > 1:
            ax.fill_between(x, low, high, color=color, alpha=0.18, lw=0)
        labels.append(text)
    pretty = metric.replace("_", " ")
    ax.set_xlabel("environment frames")
    ax.set_ylabel(pretty)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_frames(v)))
    if "success" in metric:
        ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    band = "± std" if spread == "std" else "min-max"
    subtitle = f"mean over seeds, band: {band}" if any(len(c) > 1 for c in groups.values()) else ""
    if smooth > 1:
        subtitle += f"{', ' if subtitle else ''}trailing mean over {smooth} points (faint: raw)"
    ax.set_title((title or pretty) + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    if labels:
        if len(labels) <= 6:
            ax.legend(loc="best", fontsize=9, framealpha=0.9)
        else:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return labels


# ----------------------------------------------------------------------------- entry points


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
    or a run id; a sweep parent's id reports its children and logs the files to the parent)."""
    if spread not in ("std", "minmax"):
        raise TrackingError(f"--spread must be 'std' or 'minmax', got '{spread}'")
    resolved = resolve_uri(uri)
    probe(resolved)
    mlflow_client = client(resolved)
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
        smooth=smooth,
    )
    rows = summarize(groups)
    md = out / "summary.md"
    md.write_text(
        f"# {experiment}\n\n![learning curves](learning_curves.png)\n\n" + to_markdown(rows, metric)
    )
    csv_path = out / "summary.csv"
    csv_path.write_text(to_csv(rows))
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
    from its local journal at the end of training, without a server round trip)."""
    resolved = resolve_uri(uri)
    mlflow_client = client(resolved)
    history = sorted(mlflow_client.get_metric_history(run_id, metric), key=lambda m: m.step)
    if not history:
        raise TrackingError(f"run {run_id} at {resolved} has no metric '{metric}'")
    name = mlflow_client.get_run(run_id).info.run_name or run_id[:8]
    steps = [m.step for m in history]
    if smooth is None:
        smooth = max(1, len(steps) // 25) if len(steps) > 50 else 1
    path = Path(out)
    plot_curves(
        {name: [(steps, [m.value for m in history])]},
        path,
        metric=metric,
        title=f"{name}: {metric.replace('_', ' ')} vs frames",
        smooth=smooth,
    )
    return path


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "report"


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
    from glamhpc.tracking.runs import JOB_STATE_TAG

    resolved = resolve_uri(uri)
    probe(resolved)
    mlflow_client = client(resolved)
    if experiment:
        exp = mlflow_client.get_experiment_by_name(experiment)
        if exp is None:
            raise _unknown_experiment(mlflow_client, experiment, resolved)
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
        data = _run_data(run)
        best = None
        if metric in data.latest:
            history = mlflow_client.get_metric_history(data.run_id, metric)
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
                latest=data.latest.get(metric),
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
        out.extend(sorted(children.get(row.run_id, []), key=lambda r: _natural(r.name)))
    return out
