"""Fixtures for tests on the real local Slurm cluster (slurm/cluster.sh up --nodes 2).

Without a cluster these tests skip with the reason; with GLAMHPC_REQUIRE_SLURM=1 (CI) they fail
instead, so a broken bring-up cannot pass as a green run. Every wait has a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from glamhpc.config import Config, load_config
from glamhpc.launch.resources import apply_cli_options

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
#: A training run that takes seconds: 2 envs x 4 steps per update, one CPU rank.
TINY = [
    "env.num_envs=2",
    "ppo.steps_per_env=4",
    "ppo.minibatch_size=8",
    "train.progress=false",
    "model.device=cpu",
]


def cluster_problem() -> str | None:
    """Why the cluster cannot run the tests, or None when two nodes answer."""
    if shutil.which("sbatch") is None:
        return "Slurm is not installed (sudo glamhpc cluster install)"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s"
    if out.returncode != 0:
        return "no Slurm controller answers (start one: sudo glamhpc cluster up --nodes 2)"
    up = {
        line.split()[0]
        for line in out.stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].rstrip("*~#") in ("idle", "mix", "alloc")
    }
    if len(up) < 2:
        return f"the tests need 2 Slurm nodes up, found {sorted(up)} (glamhpc cluster up --nodes 2)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    problem = cluster_problem()
    if problem is None:
        return
    if os.environ.get("GLAMHPC_REQUIRE_SLURM") == "1":
        pytest.fail(f"GLAMHPC_REQUIRE_SLURM=1 but {problem}")
    pytest.skip(problem)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GLAMHPC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "state"


def tiny_config(root: Path, uri: str, *extra: str, **launch: object) -> Config:
    cfg = load_config(
        QUICKSTART, [*TINY, f"tracking.uri={uri}", f"train.run_root={root / 'runs'}", *extra]
    )
    return apply_cli_options(cfg, executor="slurm", **launch)


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll until ``predicate()`` is truthy; fail the test (never hang) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.5)


def wait_state(job_id: str, timeout_s: float, states: tuple[str, ...] | None = None) -> str:
    """Wait for a job to reach one of ``states`` (default: any terminal state)."""
    from glamhpc.launch.jobs import TERMINAL_STATES, job_state

    wanted = set(states or TERMINAL_STATES)
    result = wait_until(
        lambda: (s := job_state(job_id)) in wanted and s, timeout_s, f"job {job_id} in {wanted}"
    )
    return str(result)
