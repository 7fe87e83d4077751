"""Batch script rendering, the no-Slurm message and Slurm error extraction (no cluster)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from glamhpc.config import load_config
from glamhpc.launch.executors import (
    NO_SLURM_HINT,
    LaunchError,
    make_executor,
    render_sbatch,
    require_slurm,
    slurm_reason,
)
from glamhpc.launch.resources import apply_cli_options, resolve


def _res(**options: object):  # type: ignore[no-untyped-def]
    return resolve(apply_cli_options(load_config(None, ["env.num_envs=4"]), **options))


def test_script_has_one_task_per_node_and_the_usr2_signal(tmp_path: Path) -> None:
    script = render_sbatch(
        _res(
            executor="slurm",
            nodes=2,
            time="00:30:00",
            partition="debug",
            qos="q",
            account="acc",
            constraint="a100",
            mem="8G",
        ),
        tmp_path,
        "glamhpc:r",
    )
    for line in [
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --time=30",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --job-name=glamhpc:r",
        "#SBATCH --partition=debug",
        "#SBATCH --qos=q",
        "#SBATCH --account=acc",
        "#SBATCH --constraint=a100",
        "#SBATCH --mem=8G",
        f"#SBATCH --output={tmp_path}/%j_0_log.out",
    ]:
        assert line in script.splitlines(), line
    assert "--error" not in script  # stdout and stderr interleaved in one log per node
    assert f"-m submitit.core._submit {tmp_path}" in script


def test_no_time_line_without_a_limit_and_arrays_are_throttled(tmp_path: Path) -> None:
    script = render_sbatch(
        _res(executor="slurm"), tmp_path, "glamhpc-sweep:s", array_size=16, array_parallelism=4
    )
    assert "--time" not in script
    assert "#SBATCH --array=0-15%4" in script
    assert "%A_%a_0_log.out" in script


def test_setup_lines_and_extra_options(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "launch.executor=slurm",
            "launch.setup=[module load cuda]",
            "launch.extra_sbatch={exclusive: user}",
        ],
    )
    script = render_sbatch(resolve(cfg), tmp_path, "glamhpc:r")
    assert "module load cuda" in script and "#SBATCH --exclusive=user" in script


def test_missing_sbatch_suggests_local_or_cluster_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm client here
    with pytest.raises(LaunchError) as info:
        require_slurm()
    assert "--executor local" in str(info.value) and "glamhpc cluster up" in str(info.value)
    with pytest.raises(LaunchError, match="sbatch"):
        make_executor(_res(executor="slurm"), tmp_path / "f", "glamhpc:r")
    assert not (tmp_path / "f").exists()
    assert NO_SLURM_HINT in str(info.value)


def test_local_executor_needs_no_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", os.defpath)
    executor = make_executor(_res(), tmp_path / "f", "glamhpc:r")
    assert type(executor).__name__ == "LocalExecutor"


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (
            "sbatch: error: invalid partition specified: nope\n"
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
            "sbatch: error: invalid partition specified: nope; sbatch: error: Batch job "
            "submission failed: Invalid partition name specified",
        ),
        ("sbatch: error: x\nsbatch: error: x\n", "sbatch: error: x"),
        ("plain failure\n", "plain failure"),
        ("", ""),
    ],
)
def test_slurm_reason(stderr: str, reason: str) -> None:
    assert slurm_reason(stderr) == reason
