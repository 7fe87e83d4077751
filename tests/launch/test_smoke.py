"""`glamhpc train CONFIG --smoke` on every shipped config: a config that fails it does not ship.

Each runs in a fresh interpreter, exactly as a user runs it (the shrunk stand-in is read offline
from its own hub cache), with 2 gloo ranks where the config distributes.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from glamhpc.launch.smoke import MEMORY_TOLERANCE, MIN_CHANGE_FRAC, SmokeVerdict, memory_ratio

REPO = Path(__file__).resolve().parents[2]
# Plain configs only: configs/sweeps/ and configs/paper/sweeps/ hold sweep files (their test is
# tests/launch/test_paper_sweeps.py and `glamhpc sweep --dry-run`).
CONFIGS = sorted(
    path
    for folder in ("", "paper", "baselines")
    for path in (REPO / "configs" / folder).glob("*.yaml")
)
RESULT = re.compile(
    r"^RESULT smoke llm_param_change_frac=(?P<llm>[0-9.]+) value_head_change_frac=(?P<head>[0-9.]+)"
    r" finite=(?P<finite>[01]) resume_exact=(?P<exact>[01]) memory_ratio=(?P<memory>[0-9.]+|nan)$"
)

pytestmark = pytest.mark.timeout(400)


def _glamhpc(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, in ``tmp_path``, with a private job registry."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "120",
        "GLAMHPC_STATE_DIR": str(tmp_path / ".state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "glamhpc", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
        check=False,
    )


def _smoke(tmp_path: Path, config: Path, *overrides: str) -> tuple[int, dict[str, str], str]:
    sets = [arg for item in overrides for arg in ("--set", item)]
    out = _glamhpc(tmp_path, "train", str(config), "--smoke", *sets)
    lines = out.stdout.strip().splitlines()
    match = RESULT.match(lines[-1]) if lines else None
    return out.returncode, (match.groupdict() if match else {}), out.stdout + out.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_passes_smoke(tmp_path: Path, config: Path) -> None:
    code, result, output = _smoke(tmp_path, config)
    assert result, output[-3000:]
    assert code == 0, output[-3000:]
    assert float(result["llm"]) >= MIN_CHANGE_FRAC and float(result["head"]) >= MIN_CHANGE_FRAC
    assert result["finite"] == "1" and result["exact"] == "1"
    assert abs(float(result["memory"]) - 1) <= MEMORY_TOLERANCE
    assert [p.name for p in tmp_path.iterdir() if p.name != ".state"] == []  # smoke folder gone


def test_a_frozen_model_fails_the_smoke(tmp_path: Path) -> None:
    """An lr so small that every Adam step rounds away: losses look fine, nothing moves."""
    code, result, output = _smoke(tmp_path, REPO / "configs" / "quickstart.yaml", "ppo.lr=1e-30")
    assert code == 1, output[-3000:]
    assert float(result["llm"]) < 0.01 and float(result["head"]) < 0.01
    assert result["finite"] == "1" and result["exact"] == "1"


@pytest.mark.parametrize(
    ("llm", "head", "finite", "exact", "memory", "ok"),
    [
        (1.0, 1.0, True, True, 1.0, True),
        (0.9, 0.95, True, True, 1.09, True),
        (0.89, 1.0, True, True, 1.0, False),
        (1.0, 0.5, True, True, 1.0, False),
        (1.0, 1.0, False, True, 1.0, False),
        (1.0, 1.0, True, False, 1.0, False),
        (1.0, 1.0, True, True, 0.85, False),
        (1.0, 1.0, True, True, float("nan"), False),
    ],
)
def test_verdict(
    llm: float, head: float, finite: bool, exact: bool, memory: float, ok: bool
) -> None:
    verdict = SmokeVerdict("c", 1, llm, head, finite, exact, memory)
    assert verdict.ok is ok
    assert RESULT.match(verdict.result_line())
    assert [row[2] for row in verdict.rows()].count("FAIL") == (0 if ok else 1)


def test_submit_smoke_runs_the_check_as_a_job_and_returns_its_verdict(tmp_path: Path) -> None:
    """`submit --smoke` (local executor here; Slurm the same way): one job runs `train --smoke`
    there, the submitter waits and prints the verdict, and `glamhpc jobs` lists the job."""
    config = str(REPO / "configs" / "quickstart.yaml")
    out = _glamhpc(tmp_path, "submit", config, "--smoke", "--executor", "local")
    assert out.returncode == 0, out.stdout + out.stderr
    match = RESULT.match(out.stdout.strip().splitlines()[-1])
    assert match and match["exact"] == "1", out.stdout
    jobs = _glamhpc(tmp_path, "jobs")
    assert "smoke-" in jobs.stdout, jobs.stdout + jobs.stderr


def test_memory_ratio_reads_the_last_update() -> None:
    held = {
        "memory/weights_gb": 1.0,
        "memory/grads_gb": 1.0,
        "memory/optimizer_gb": 2.0,
        "memory/health_gb": 1.0,
    }
    history = [{"memory/weights_gb": 9.0}, held]
    assert memory_ratio(5.5e9, history) == pytest.approx(1.1)
    assert math.isnan(memory_ratio(5e9, []))
    assert math.isnan(memory_ratio(5e9, [{"policy_loss": 0.1}]))
