"""A report's summary table as markdown (printed and written) and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from glamhpc.report.groups import GroupSummary
from glamhpc.ui.plots import format_frames

CSV_HEADER = (
    "group", "n_seeds", "seeds", "final_mean", "final_low", "final_high", "band", "best",
    "frames", "steps_per_s",
)  # fmt: skip
_INTERVAL = {"std": "mean ± std", "ci95": "mean [95% CI]", "minmax": "mean [min, max]"}


def _final(r: GroupSummary) -> str:
    if r.band == "std":
        return f"{r.final_mean:.3f} ± {(r.final_high - r.final_mean):.3f}"
    return f"{r.final_mean:.3f} [{r.final_low:.3f}, {r.final_high:.3f}]"


def groups_markdown(rows: Sequence[GroupSummary], metric: str = "success rate") -> str:
    """One line per group: n = distinct seeds; final = at the last frame all of them reached."""
    interval = _INTERVAL.get(rows[0].band if rows else "std", "mean")
    head = (
        f"| group | n seeds | final {metric} ({interval}) | best (mean curve) | frames | "
        f"env steps/s |\n|---|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r.group} | {r.n} | {_final(r)} | {r.best:.3f} | {format_frames(r.frames)} | "
        f"{'-' if r.steps_per_s is None else f'{r.steps_per_s:.1f}'} |\n"
        for r in rows
    )
    return head + body


def groups_csv(rows: Sequence[GroupSummary]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for r in rows:
        writer.writerow(
            [r.group, r.n, " ".join(r.seeds), f"{r.final_mean:.6g}", f"{r.final_low:.6g}",
             f"{r.final_high:.6g}", r.band, f"{r.best:.6g}", f"{r.frames:.0f}",
             "" if r.steps_per_s is None else f"{r.steps_per_s:.6g}"]
        )  # fmt: skip
    return buf.getvalue()
