"""A 2 settings x 2 seeds sweep on the real cluster: ONE array, 4 child runs under one parent."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.launch import load_sweep, plan_sweep, submit_sweep
from glamhpc.launch.executors import slurm_command
from tests.slurm.conftest import QUICKSTART, TINY, wait_state

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def test_sweep_is_one_array_with_children_under_one_parent(
    state_dir: Path, tmp_path: Path, sqlite_uri: str
) -> None:
    overrides = [*TINY, "train.max_updates=2", f"tracking.uri={sqlite_uri}"]
    overrides.append(f"train.run_root={tmp_path / 'runs'}")
    (tmp_path / "sweep.yaml").write_text(
        "name: lr-seeds\n"
        f"base: {QUICKSTART}\n"
        f"set: {overrides!r}\n"
        "grid:\n  ppo.lr: [1.0e-4, 5.0e-4]\n"
        "seeds: [1, 2]\n"
    )
    plan = plan_sweep(load_sweep(tmp_path / "sweep.yaml"), workdir=tmp_path, executor="slurm")
    submitted = submit_sweep(plan)
    assert len(submitted.jobs) == 4
    assert [j.job_id for j in submitted.jobs] == [f"{submitted.job_id}_{i}" for i in range(4)]
    assert submitted.finalizer_id and submitted.parent_run_id

    # The finalizer runs after every element (afterany) and closes the parent run.
    assert wait_state(submitted.finalizer_id, 300) == "COMPLETED"
    elements = slurm_command(
        ["sacct", "-X", "-n", "-P", "-j", submitted.job_id, "-o", "JobID,JobName,State"]
    ).split()
    assert sorted(elements) == sorted(
        f"{submitted.job_id}_{i}|glamhpc-sweep:lr-seeds|COMPLETED" for i in range(4)
    )
    client = MlflowClient(sqlite_uri)
    parent = client.get_run(submitted.parent_run_id)
    assert parent.info.status == "FINISHED"
    # The sweep's own experiment, and the finalizer's link to the children side by side.
    assert client.get_experiment_by_name("quickstart") is None
    experiment = client.get_experiment_by_name("lr-seeds")
    assert experiment is not None
    compare = parent.data.tags["glamhpc.compare_url"]
    assert "/#/compare-runs?runs=" in compare
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{submitted.parent_run_id}'",
    )
    assert sorted(c.info.run_name for c in children) == [f"lr-seeds-{i:03d}" for i in range(4)]
    assert all(c.info.status == "FINISHED" for c in children)
    settings = {(c.data.tags["sweep.ppo.lr"], c.data.tags["sweep.seed"]) for c in children}
    assert settings == {("0.0001", "1"), ("0.0001", "2"), ("0.0005", "1"), ("0.0005", "2")}
    assert all(len(c.data.metrics) > 0 for c in children)
    assert all(c.info.run_id in compare for c in children)

    result = CliRunner().invoke(app, ["jobs"])
    assert result.exit_code == 0
    for i in range(4):
        assert f"lr-seeds-{i:03d}" in result.output
