"""The learning-curve artifact: one run's metric vs frames drawn from its local journal.

Reads the journal, not the server, so it works offline and costs no round trip; the picture is
the one `glamhpc report` draws (both use ``glamhpc.ui.plots``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from glamhpc.tracking.journal import JOURNAL, metric_series
from glamhpc.tracking.runs import LEGACY_METRIC_KEYS
from glamhpc.ui.plots import plot_curves, smooth_window

log = logging.getLogger("glamhpc.tracking")


def metric_label(metric: str) -> str:
    """A metric key as a picture names it: "Main/success_rate" -> "success rate"."""
    return (
        metric.rsplit("/", 1)[-1].replace("_", " ")
        if metric.startswith("Main/")
        else (metric.replace("_", " "))
    )


def draw_learning_curve(run_dir: Path, metric: str, filename: str | None = None) -> Path | None:
    """Render ``metric`` vs frames from run_dir's journal to run_dir/logs/<filename>.

    Returns the PNG path, or None (with a warning) when the metric was never logged.
    """
    journal = run_dir / JOURNAL
    steps, values = metric_series(journal, metric)
    legacy = LEGACY_METRIC_KEYS.get(metric)
    if not steps and legacy:  # a run that logged the key's old name (resumed across the rename)
        steps, values = metric_series(journal, legacy)
    if not steps:
        log.warning("no '%s' in %s; learning curve not drawn", metric, journal)
        return None
    # A metric name may contain '/': not in a file name. The main success rate keeps the file
    # name it always had (learning_curve_success_rate.png).
    stem = (legacy or metric).replace("/", "_")
    out = run_dir / "logs" / (filename or f"learning_curve_{stem}.png")
    plot_curves(
        {run_dir.name: [(steps, values)]},
        out,
        metric=metric,
        title=f"{run_dir.name}: {metric_label(metric)} vs frames",
        window=smooth_window(len(steps)),
    )
    return out
