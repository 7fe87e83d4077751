"""CPU smoke test of benchmarks/tracking_load.py, so that the load benchmark cannot rot: two
writer processes against a real `glamhpc tracking-server` (SQLite) for a few seconds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.mlflow_server

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tracking_load.py"


def test_two_writers_deliver_every_point_exactly_once(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--writers", "2", "--duration", "4", "--settle-s", "20",
         "--keep", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=540, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        r"RESULT writers=2 backend=sqlite delivered_at_end_frac=(\S+) lost=(\d+) "
        r"duplicated=(\d+) p99_block_ms=(\S+)",
        last,
    )
    assert match, last
    frac, lost, duplicated, p99 = match.groups()
    assert float(frac) == 1.0 and lost == "0" and duplicated == "0"
    assert 0 < float(p99) < 1000
    # The writers really logged the trainer's metric set, several updates each.
    assert re.search(r"(\d+) points in (\d+) updates by 2 writers", done.stdout)
    points, updates = map(int, re.search(r"(\d+) points in (\d+) updates", done.stdout).groups())
    assert updates >= 4 and points == 37 * updates
