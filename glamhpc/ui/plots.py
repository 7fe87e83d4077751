"""Learning-curve pictures: the one curve smoother, the mean-over-seeds math and the PNG plotter.

Used by `glamhpc report` (curves over seeds from MLflow) and by the Tracker (one run's curve from
its local journal), so both draw the same picture. numpy and matplotlib are imported inside the
functions: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.typing import ColorType
    from numpy.typing import ArrayLike, NDArray

    FloatArray = NDArray[np.float64]

DEFAULT_METRIC = "Main/success_rate"
"""The metric a learning curve shows unless told otherwise: the main success rate under its MLflow
key (glamhpc.tracking.runs.MAIN_SUCCESS_KEY; runs logged before it used ``success_rate``)."""

Curve = tuple[Sequence[float], Sequence[float]]
"""One run's (steps, values)."""


def smooth(values: ArrayLike, window: int) -> FloatArray:
    """Trailing mean over ``window`` points (no look-ahead): point i averages the last
    ``window`` points up to i, fewer at the start."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    if window <= 1 or len(arr) < 2:
        return arr
    cumsum = np.cumsum(np.insert(arr, 0, 0.0))
    idx = np.arange(1, len(arr) + 1)
    lo = np.maximum(0, idx - window)
    result: FloatArray = (cumsum[idx] - cumsum[lo]) / (idx - lo)
    return result


def smooth_window(n_points: int) -> int:
    """The window a single-run curve is smoothed with by default.

    Per-update success rates are noisy: a trailing mean over ~1/25 of the run, and none for
    short runs where every point matters.
    """
    return max(1, n_points // 25) if n_points > 50 else 1


def align(curves: Sequence[Curve], window: int = 1) -> tuple[FloatArray, FloatArray]:
    """(frames, stack[seed, frame]): every curve smoothed (trailing mean over ``window``), then
    interpolated onto the union of their frames within the range ALL of them cover, so that no
    mean ever mixes in an extrapolated value."""
    import numpy as np

    arrays = [(np.asarray(s, float), smooth(v, window)) for s, v in curves if len(s)]
    if not arrays:
        raise ValueError("no points to align")
    lo_x = max(s[0] for s, _ in arrays)
    hi_x = min(s[-1] for s, _ in arrays)
    grid = np.unique(np.concatenate([s for s, _ in arrays]))
    # Disjoint ranges have no common frame: the last frame of the shortest run stands in.
    grid = grid[(grid >= lo_x) & (grid <= hi_x)] if hi_x >= lo_x else np.array([hi_x])
    stack = np.stack([np.interp(grid, s, v) for s, v in arrays])
    return grid, stack


def aggregate(
    curves: Sequence[Curve], spread: str = "std", window: int = 1
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(x, mean, low, high) of several runs' curves on a common step grid.

    Runs of one setting log at the same frames, but a run that stopped early (or a different
    num_envs) would not: every curve is interpolated onto the union of steps, limited to the range
    all runs cover, so the mean never mixes in extrapolated values. ``window`` smooths each curve
    first (see ``smooth``); ``spread`` is ``std`` (mean ± std) or ``minmax``.
    """
    import numpy as np

    grid, stack = align(curves, window)
    mean = stack.mean(axis=0)
    if spread == "minmax":
        return grid, mean, stack.min(axis=0), stack.max(axis=0)
    std = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.zeros_like(mean)
    return grid, mean, mean - std, mean + std


def format_frames(x: float) -> str:
    """Frame counts as people read them: 1.28M, 450k, 12."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.0f}"


def style_frames_axes(ax: Any, metric_label: str) -> None:
    """The x axis in frames (1.28M, 450k), the metric on y (a rate stays within [0, 1]), a grid:
    what every curve glamhpc draws shares."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xlabel("environment frames")
    ax.set_ylabel(metric_label)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_frames(v)))
    if "success" in metric_label:
        ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)


def plot_curves(
    groups: Mapping[str, Sequence[Curve]],
    out: Path,
    metric: str = DEFAULT_METRIC,
    title: str | None = None,
    spread: str = "std",
    window: int = 1,
) -> list[str]:
    """Draw one mean line (+ spread band when n > 1) per group; returns the legend labels.

    ``window`` is the trailing-mean window (see ``smooth``); the raw mean stays drawn, faint,
    when it is > 1.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless (login/compute nodes); must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=120, layout="constrained")
    # tab10/tab20 are ListedColormaps whose colors are a sequence (get_cmap is typed Colormap).
    cmap = cast("ListedColormap", plt.get_cmap("tab10" if len(groups) <= 10 else "tab20"))
    colors = cast("Sequence[ColorType]", cmap.colors)
    labels: list[str] = []
    show_n = any(len(c) > 1 for c in groups.values())  # "(n=1)" on every line is only noise
    for i, (label, group) in enumerate(groups.items()):
        curves = [c for c in group if len(c[0])]
        if not curves:
            continue
        color = colors[i % len(colors)]
        x, mean, low, high = aggregate(curves, spread=spread, window=window)
        n = len(curves)
        text = f"{label}  (n={n})" if show_n else label
        marker = "o" if len(x) <= 12 else None
        if window > 1:
            # The raw mean stays visible, faint, so smoothing never hides a collapse.
            raw_x, raw_mean, _, _ = aggregate(curves, spread=spread)
            ax.plot(raw_x, raw_mean, color=color, lw=0.8, alpha=0.35)
        ax.plot(x, mean, color=color, lw=2.0, label=text, marker=marker, ms=4)
        if n > 1:
            ax.fill_between(x, low, high, color=color, alpha=0.18, lw=0)
        labels.append(text)
    pretty = metric.replace("_", " ")
    style_frames_axes(ax, pretty)
    band = "± std" if spread == "std" else "min-max"
    subtitle = f"mean over seeds, band: {band}" if any(len(c) > 1 for c in groups.values()) else ""
    if window > 1:
        subtitle += f"{', ' if subtitle else ''}trailing mean over {window} points (faint: raw)"
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
