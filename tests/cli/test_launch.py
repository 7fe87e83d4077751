"""`glamhpc submit | sweep | jobs | logs | cancel | cluster` through Typer's CliRunner.

Everything here runs without a Slurm cluster: dry runs, the no-Slurm message and input errors.
The real-cluster behaviour is tested in tests/slurm/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLAMHPC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _no_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


def test_dry_run_prints_plan_and_script_and_writes_nothing(tmp_path: Path) -> None:
    code, out = _run(
        "submit",
        QUICKSTART,
        "--set",
        "train.max_updates=3",
        "--executor",
        "slurm",
        "--nodes",
        "2",
        "--time",
        "00:10:00",
        "--run-name",
        "dry",
        "--partition",
        "debug",
        "--dry-run",
    )
    assert code == 0, out
    assert "nodes        2 x 1 CPU rank(s) = world size 2" in out
    assert "--rdzv-backend=c10d" in out and "--rdzv-endpoint=$FIRST_NODE:$PORT" in out
    assert "-m glamhpc train" in out and "--run-name dry" in out
    assert "#SBATCH --nodes=2" in out and "#SBATCH --time=10" in out
    assert "#SBATCH --partition=debug" in out and "#SBATCH --signal=USR2@120" in out
    assert list(tmp_path.iterdir()) == []  # no run dir, no registry, no MLflow store


def test_dry_run_works_without_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_slurm(monkeypatch, tmp_path)
    code, out = _run("submit", QUICKSTART, "-e", "slurm", "--dry-run", "-n", "x")
    assert code == 0, out
    assert "#SBATCH --ntasks-per-node=1" in out and "--time" not in out.split("# sbatch")[1]


def test_dry_run_shows_ranks_memory_and_script_together() -> None:
    code, out = _run(
        "submit", QUICKSTART, "-e", "slurm", "-N", "2", "--nproc-per-node", "2", "--dry-run"
    )
    assert code == 0, out
    assert "ranks        node 0: ranks 0-1, envs 0-7 (4 per rank)" in out
    assert "node 1: ranks 2-3, envs 8-15 (4 per rank)" in out
    assert "model        tiny-t5:" in out and "memory/rank  ~" in out
    assert out.index("ranks") < out.index("memory/rank") < out.index("# sbatch script")


def test_local_dry_run_has_no_script() -> None:
    code, out = _run("submit", QUICKSTART, "--dry-run")
    assert code == 0, out
    assert "executor     local" in out and "--standalone" in out and "#SBATCH" not in out


def test_missing_sbatch_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_slurm(monkeypatch, tmp_path)
    code, out = _run("submit", QUICKSTART, "--executor", "slurm", "-n", "nos")
    assert code != 0
    assert "--executor local" in out and "glamhpc cluster up" in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "pbs"], "bad --executor 'pbs'"),
        (["--nodes", "2"], "needs Slurm"),
        (["--time", "soon", "-e", "slurm"], "bad time limit 'soon'"),
        (["--set", "env.num_envs=15", "-e", "slurm", "-N", "2"], "split evenly"),
        (["--run-name", "a/b"], "bad run name"),
        (["--set", "launch.bogus=1"], "unknown key 'launch.bogus'"),
    ],
)
def test_bad_input_fails_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    code, out = _run("submit", QUICKSTART, "--dry-run", *args)
    assert code == 2, out
    assert message in out
    assert not (tmp_path / "runs").exists()


def test_sweep_dry_run_lists_elements_and_one_array() -> None:
    code, out = _run(
        "sweep",
        str(REPO / "configs" / "sweeps" / "example-2x2.yaml"),
        "-e",
        "slurm",
        "--max-parallel",
        "2",
        "--dry-run",
    )
    assert code == 0, out
    assert "4 elements, at most 2 at once" in out
    assert "[3] example-2x2-003: ppo.lr=0.0005 seed=2" in out
    assert "#SBATCH --array=0-3%2" in out and out.count("#!/bin/bash") == 1


def test_bad_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("name: s\nzip: {ppo.lr: [1.0e-4], ppo.epochs: [1, 2]}\n")
    code, out = _run("sweep", str(tmp_path / "s.yaml"), "--dry-run")
    assert code == 2 and "same length" in out


def test_jobs_logs_cancel_without_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_slurm(monkeypatch, tmp_path)
    code, out = _run("jobs")
    assert code == 0 and "no glamhpc jobs" in out and "local jobs only" in out
    code, out = _run("logs", "4242")
    assert code == 2 and "sbatch" not in out and "scontrol" in out
    code, out = _run("logs", "some-run")
    assert code == 2 and "no job or run named 'some-run'" in out
    code, out = _run("cancel", "some-sweep")
    assert code == 2 and "--executor local" in out


def test_cluster_commands_are_registered() -> None:
    code, out = _run("cluster", "--help")
    assert code == 0
    for command in ("install", "up", "down", "status"):
        assert command in out
    code, out = _run("cluster", "up", "--nodes", "4")
    assert code == 2 and "less than or equal to 3" in out


def test_cluster_script_ships_with_the_package() -> None:
    from glamhpc.cli.cluster import cluster_script

    script = cluster_script()
    assert script.is_file() and os.access(script, os.R_OK)
    assert (REPO / "slurm" / "cluster.sh").resolve() == script.resolve()
