"""One-rank agents (DRRN, Symbolic-PPO) asked for several ranks: one line before any rank runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.agents import ONE_RANK_AGENTS, one_rank_problem
from glamhpc.cli import app

runner = CliRunner()


@pytest.mark.parametrize("agent", sorted(ONE_RANK_AGENTS))
def test_train_nproc_refuses_a_one_rank_agent_before_torchrun(tmp_path: Path, agent: str) -> None:
    runs = tmp_path / "runs"
    args = ["train", "--set", f"agent={agent}", "--set", f"train.run_root={runs}"]
    args += ["--set", "model.device=cpu", "--set", "tracking.enabled=false", "--nproc", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output  # no rank printed it, no torchrun report followed
    assert f"agent={agent} trains on one rank, not 2" in lines[0]
    assert "without --nproc" in lines[0] and "Traceback" not in result.output
    assert not runs.exists()  # no rank started: nothing was written


def test_one_rank_problem() -> None:
    assert one_rank_problem("drrn", 1) is None and one_rank_problem("symbolic", 0) is None
    assert one_rank_problem("glam", 4) is None and one_rank_problem("bc", 2) is None
    problem = one_rank_problem("symbolic", 3)
    assert problem is not None and "not 3" in problem and "\n" not in problem
