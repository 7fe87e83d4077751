"""Presentation helpers shared by training, evaluation, tracking and reports.

A leaf: nothing here imports glamhpc, so any layer may use it without an import cycle. Heavy
libraries (rich, numpy, matplotlib) are imported inside the functions that need them, so that
importing this package stays cheap for the CLI.
"""

from glamhpc.ui.plots import (
    DEFAULT_METRIC,
    Curve,
    aggregate,
    format_frames,
    plot_curves,
    smooth,
    smooth_window,
)
from glamhpc.ui.progress import progress_bar

__all__ = [
    "DEFAULT_METRIC",
    "Curve",
    "aggregate",
    "format_frames",
    "plot_curves",
    "progress_bar",
    "smooth",
    "smooth_window",
]
