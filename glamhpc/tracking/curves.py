"""The learning-curve artifact: one run's metric vs frames drawn from its local journal.

Reads the journal, not the server, so it works offline and costs no round trip; the picture is
the one `glamhpc report` draws (both use ``glamhpc.ui.plots``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from glamhpc.tracking.journal import JOURNAL, metric_series
from glamhpc.ui.plots import plot_curves, smooth_window

log = logging.getLogger("glamhpc.tracking")


def draw_learning_curve(run_dir: Path, metric: str, filename: str | None = None) -> Path | None:
    """Render ``metric`` vs frames from run_dir's journal to run_dir/logs/<filename>.

    Returns the PNG path, or None (with a warning) when the metric was never logged.
    """
    journal = run_dir / JOURNAL
    steps, values = metric_series(journal, metric)
    if not steps:
        log.warning("no '%s' in %s; learning curve not drawn", metric, journal)
        return None
    # A metric name may contain '/': not in a file name.
    out = run_dir / "logs" / (filename or f"learning_curve_{metric.replace('/', '_')}.png")
    plot_curves(
        {run_dir.name: [(steps, values)]},
        out,
        metric=metric,
        title=f"{run_dir.name}: {metric.replace('_', ' ')} vs frames",
        window=smooth_window(len(steps)),
    )
    return out
