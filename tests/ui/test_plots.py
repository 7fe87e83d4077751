"""`glamhpc.ui.plots`: the curve smoother, mean over seeds on a common grid, the PNG plotter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from glamhpc.ui.plots import aggregate, plot_curves, smooth, smooth_window


def test_aggregate_aligns_runs_on_common_frames() -> None:
    a = ([0, 10, 20, 30], [0.0, 0.2, 0.4, 0.6])
    b = ([0, 15, 30, 45], [0.2, 0.2, 0.2, 0.2])  # other grid, runs longer
    x, mean, low, high = aggregate([a, b], spread="minmax")
    assert list(x) == [0, 10, 15, 20, 30]  # only frames both runs reached
    assert mean[-1] == pytest.approx(0.4) and low[-1] == 0.2 and high[-1] == 0.6
    _, _, low, high = aggregate([a, b], spread="std")
    assert high[0] - low[0] == pytest.approx(2 * np.std([0.0, 0.2], ddof=1))


def test_plot_curves(tmp_path: Path) -> None:
    labels = plot_curves({"only": [([0, 1, 2], [0.1, 0.5, 0.9])]}, tmp_path / "p.png")
    assert labels == ["only"] and (tmp_path / "p.png").stat().st_size > 5_000


def test_smooth_is_a_trailing_mean_without_look_ahead() -> None:
    assert list(smooth([0.0, 2.0, 4.0, 6.0], 2)) == [0.0, 1.0, 3.0, 5.0]
    assert list(smooth([1.0, 5.0], 1)) == [1.0, 5.0]
    assert smooth_window(50) == 1 and smooth_window(100) == 4


def test_ui_is_a_leaf() -> None:
    """Any layer may import glamhpc.ui: it must import nothing else of glamhpc."""
    code = (
        "import sys, glamhpc.ui; print(sorted(m for m in sys.modules if m.startswith('glamhpc')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        out.stdout.strip() == "['glamhpc', 'glamhpc.ui', 'glamhpc.ui.plots', 'glamhpc.ui.progress']"
    )
