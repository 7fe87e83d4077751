"""The report's PNG: mean learning curve per group with its band across seeds, and beside it the
final-performance table (mean and interval per group), so the picture answers "which is better"
on its own when it is pasted into a slide or opened from the MLflow parent run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from glamhpc.report.groups import GroupSummary
from glamhpc.report.stats import band
from glamhpc.ui.plots import Curve, align, format_frames, style_frames_axes

if TYPE_CHECKING:
    from matplotlib.colors import ListedColormap
    from matplotlib.typing import ColorType

BAND_TEXT = {
    "std": "mean ± std across seeds",
    "ci95": "mean, 95% bootstrap CI across seeds",
    "minmax": "mean, min-max across seeds",
}


def draw_report(
    groups: Mapping[str, Sequence[Curve]],
    rows: Sequence[GroupSummary],
    out: Path,
    metric_label: str,
    title: str,
    band_kind: str = "std",
    window: int = 1,
) -> list[str]:
    """Write the PNG; returns the legend labels (one per group, with its number of seeds)."""
    import matplotlib

    matplotlib.use("Agg")  # headless (login/compute nodes); must precede pyplot
    import matplotlib.pyplot as plt

    fig, (ax, side) = plt.subplots(
        1, 2, figsize=(11.0, 4.8), dpi=100, layout="constrained", width_ratios=(3.0, 2.0)
    )
    cmap = cast("ListedColormap", plt.get_cmap("tab10" if len(groups) <= 10 else "tab20"))
    colors = cast("Sequence[ColorType]", cmap.colors)
    labels: list[str] = []
    for i, (label, curves) in enumerate(groups.items()):
        color = colors[i % len(colors)]
        x, stack = align(curves, window)
        mean, low, high = band(stack, band_kind)
        text = f"{label}  (n={len(stack)})"
        ax.plot(x, mean, color=color, lw=2.0, label=text, marker="o" if len(x) <= 12 else None)
        if len(stack) > 1:
            ax.fill_between(x, low, high, color=color, alpha=0.18, lw=0)
        labels.append(text)
    style_frames_axes(ax, metric_label)
    subtitle = BAND_TEXT.get(band_kind, band_kind)
    if window > 1:
        subtitle += f"; trailing mean over {window} points"
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    if labels:
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    _final_table(side, rows, colors, band_kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return labels


def _final_table(
    ax: object, rows: Sequence[GroupSummary], colors: Sequence[ColorType], band_kind: str
) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    ax.axis("off")
    interval = "± std" if band_kind == "std" else ("95% CI" if band_kind == "ci95" else "min-max")
    cells = [
        [r.group, str(r.n), f"{r.final_mean:.3f}", f"[{r.final_low:.3f}, {r.final_high:.3f}]",
         format_frames(r.frames)]
        for r in rows
    ]  # fmt: skip
    if not cells:
        return
    table = ax.table(
        cellText=cells,
        colLabels=["group", "seeds", "final", interval, "at frames"],
        loc="upper center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(5)))
    table.scale(1.0, 1.4)
    for i in range(len(cells)):
        table[i + 1, 0].get_text().set_color(colors[i % len(colors)])
    ax.set_title("final performance", fontsize=10)
