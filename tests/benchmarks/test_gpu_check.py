"""`benchmarks/gpu_check.py --cpu-smoke`: the GPU check's code runs end to end on CPU.

A GPU session is short and rare: the check must work the first time one runs it, so the same
code (rollout, PPO update, fp32 vs bf16-mixed, the 1-rank FSDP2 update over gloo) runs here on
tiny shapes. No `__init__.py` in this folder on purpose: a regular package named `benchmarks`
would shadow the repository's `benchmarks/` folder for every test run from the root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULT = re.compile(
    r"RESULT gpu_check large_env_steps_per_s=(?P<steps>\d+\.\d|n/a) "
    r"large_update_mfu=(?P<mfu>\d+\.\d{3}|n/a)"
)


def test_cpu_smoke_runs_every_case_and_ends_with_the_result_line() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    match = RESULT.fullmatch(lines[-1])
    assert match is not None, lines[-1]
    assert float(match["steps"]) > 0  # measured on CPU too
    assert match["mfu"] == "n/a"  # no peak FLOP/s on CPU
    # Both precisions of the large shape and the FSDP2 case ran, with fp32 parameters and state.
    assert re.search(r"done large fp32: .* env steps/s", done.stdout)
    assert re.search(r"done large bf16-mixed: .* env steps/s", done.stdout)
    assert re.search(r"done xl 2\+2L fsdp bf16-mixed: ", done.stdout)
    assert "n/a (CPU)" in done.stdout
    assert "error:" not in done.stdout
