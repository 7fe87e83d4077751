"""`glamhpc eval --executor slurm` on the real local Slurm cluster: the array job's merged
parts equal the local unsplit evaluation, and `glamhpc jobs` lists the array as kind eval
(skips without a cluster, like tests/slurm)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.launch import registry
from glamhpc.launch.jobs import list_jobs
from tests.slurm.conftest import slurm_cluster, state_dir  # noqa: F401  (the fixtures, by import)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster", "state_dir")]


def test_slurm_array_parts_equal_the_local_run(tmp_path: Path) -> None:
    common = ["eval", "--baseline", "random", "--suite", "other_nouns"]
    common += ["--level", "GoToRedBallNoDists", "--episodes", "6", "--num-envs", "4", "--no-track"]
    runner = CliRunner()
    local = runner.invoke(app, [*common, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    slurm = runner.invoke(
        app, [*common, "--executor", "slurm", "--parts", "2", "--out", str(tmp_path / "slurm")]
    )
    assert slurm.exit_code == 0, slurm.output
    assert "submitted 2 array tasks" in slurm.stdout
    tag = "other_nouns+GoToRedBallNoDists-seed1"
    parts = ["random/part0", "random/part1"]
    for name in ("results.csv", "episodes.csv"):
        assert (tmp_path / "slurm" / tag / name).read_text() == (
            tmp_path / "local" / tag / name
        ).read_text()
    # One log per array task, written by submitit into the output folder.
    assert len(list((tmp_path / "slurm" / "slurm").glob("*_log.out"))) == 2
    # The array is in the job registry, so `glamhpc jobs` / `logs` / `cancel` know it.
    (record,) = registry.load()
    assert (record.kind, record.name, record.runs) == ("eval", "random", parts)
    assert record.folder == str((tmp_path / "slurm" / "slurm").resolve())
    rows, _ = list_jobs()
    mine = [r for r in rows if r.job_id.split("_")[0] == record.job_id]
    # (Not the states: accounting may still lag behind the tasks that just returned.)
    assert sorted((r.kind, r.run) for r in mine) == [("eval", name) for name in parts]
