"""A report's summary table as markdown (printed and written) and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from glamhpc.report.groups import GroupSummary
from glamhpc.ui.plots import DEFAULT_METRIC, format_frames

CSV_HEADER = ("group", "n_seeds", "final_mean", "final_std", "best", "frames", "steps_per_s")


def groups_markdown(rows: Sequence[GroupSummary], metric: str = DEFAULT_METRIC) -> str:
    head = (
        f"| group | n seeds | final {metric} (mean ± std) | best (mean curve) | frames | "
        f"env steps/s |\n|---|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r.group} | {r.n} | {r.final_mean:.3f} ± {r.final_std:.3f} | {r.best:.3f} | "
        f"{format_frames(r.frames)} | "
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
            [r.group, r.n, f"{r.final_mean:.6g}", f"{r.final_std:.6g}", f"{r.best:.6g}",
             f"{r.frames:.0f}", "" if r.steps_per_s is None else f"{r.steps_per_s:.6g}"]
        )  # fmt: skip
    return buf.getvalue()
