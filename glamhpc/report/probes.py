"""The report's policy-evolution figure (the paper's appendix): per probe prompt, the policy's
probability of each action vs environment frames, averaged over a group's seeds.

The trainer logs ``probe/<kk>/<action>`` every ``train.probe_every`` updates and tags each run with
the probes' missions (``probe.<kk>``; glamhpc.rl.probes). The probe prompts do not depend on the
seed, so the seeds of one setting scored the same prompts and their mean is meaningful.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from glamhpc.report.loading import RunData
from glamhpc.rl.probes import parse_probe_key
from glamhpc.ui.plots import Curve, align, style_frames_axes

if TYPE_CHECKING:
    from matplotlib.colors import ListedColormap
    from matplotlib.typing import ColorType
    from mlflow import MlflowClient

ProbeCurves = dict[int, dict[str, Curve]]
"""probe index -> action -> (frames, probabilities) of one run."""

_COLUMNS = 4


def run_probe_curves(mlflow_client: MlflowClient, run: RunData) -> ProbeCurves:
    """Every probe curve a run logged (empty for a run without probes)."""
    out: ProbeCurves = {}
    for key in sorted(run.latest):
        parsed = parse_probe_key(key)
        if parsed is None:
            continue
        history = sorted(mlflow_client.get_metric_history(run.run_id, key), key=lambda m: m.step)
        kept = [m for m in history if math.isfinite(m.value)]
        if kept:
            curve = ([float(m.step) for m in kept], [float(m.value) for m in kept])
            out.setdefault(parsed[0], {})[parsed[1]] = curve
    return out


def mean_probe_curves(runs: Sequence[ProbeCurves]) -> ProbeCurves:
    """Per probe and action, the mean over the runs that logged it (aligned on their frames)."""
    keys = sorted({(k, a) for run in runs for k, actions in run.items() for a in actions})
    out: ProbeCurves = {}
    for k, action in keys:
        x, stack = align([run[k][action] for run in runs if action in run.get(k, {})])
        out.setdefault(k, {})[action] = (x.tolist(), stack.mean(axis=0).tolist())
    return out


def draw_probe_figures(
    mlflow_client: MlflowClient,
    groups: Mapping[str, Sequence[RunData]],
    paths: Mapping[str, Path],
    title: str,
) -> list[Path]:
    """One PNG per group that logged probes, at ``paths[group]``; returns the PNGs written."""
    written = []
    for label, runs in groups.items():
        per_run = [c for c in (run_probe_curves(mlflow_client, r) for r in runs) if c]
        if not per_run:
            continue
        titles = {k: runs[0].tags.get(f"probe.{k:02d}", "") for k in per_run[0]}
        seeds = f"mean over {len(per_run)} seeds" if len(per_run) > 1 else "one run"
        draw_probe_figure(
            mean_probe_curves(per_run), titles, paths[label], f"{title}: {label} ({seeds})"
        )
        written.append(paths[label])
    return written


def draw_probe_figure(
    curves: ProbeCurves, titles: Mapping[int, str], out: Path, title: str
) -> None:
    """A grid of panels, one per probe: each action's probability vs frames (same colour per
    action in every panel), the legend in the spare panel."""
    import matplotlib

    matplotlib.use("Agg")  # headless (login/compute nodes); must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    probes = sorted(curves)
    actions = sorted({a for k in probes for a in curves[k]})
    rows = (len(probes) + 1 + _COLUMNS - 1) // _COLUMNS  # + 1: the legend's panel
    fig, axes = plt.subplots(
        rows, _COLUMNS, figsize=(4.0 * _COLUMNS, 3.0 * rows), dpi=90, layout="constrained",
        squeeze=False,
    )  # fmt: skip
    cmap = cast("ListedColormap", plt.get_cmap("tab10"))
    colors = cast("Sequence[ColorType]", cmap.colors)
    color = {a: colors[i % len(colors)] for i, a in enumerate(actions)}
    flat = list(axes.flat)
    for ax, k in zip(flat, probes, strict=False):
        for action, (x, y) in sorted(curves[k].items()):
            ax.plot(x, y, color=color[action], lw=1.6, marker="o" if len(x) <= 12 else None,
                    ms=3, label=action)  # fmt: skip
        style_frames_axes(ax, "π(action | probe)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(_wrap(f"{k}: {titles.get(k, '')}"), fontsize=8)
    legend = flat[len(probes)]
    legend.axis("off")
    handles = [Line2D([], [], color=color[a], lw=2) for a in actions]
    legend.legend(handles, actions, loc="center", fontsize=9, title="action")
    for ax in flat[len(probes) + 1 :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def _wrap(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
