"""A sweep on the local executor (real processes, no Slurm): throttled driver, parent + children."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.launch import load_sweep, plan_sweep, registry, submit_sweep
from glamhpc.launch.jobs import local_rows

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "env.num_envs=2",
    "ppo.steps_per_env=4",
    "ppo.minibatch_size=8",
    "train.progress=false",
    "model.device=cpu",
    "train.max_updates=2",
]


def test_local_sweep_runs_elements_within_max_parallel(
    tmp_path: Path, sqlite_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLAMHPC_STATE_DIR", str(tmp_path / "state"))
    overrides = [*TINY, f"tracking.uri={sqlite_uri}", f"train.run_root={tmp_path / 'runs'}"]
    (tmp_path / "sweep.yaml").write_text(
        f"name: local-sw\nbase: {REPO / 'configs' / 'quickstart.yaml'}\nset: {overrides!r}\n"
        "seeds: [1, 2]\nmax_parallel: 1\n"
    )
    plan = plan_sweep(load_sweep(tmp_path / "sweep.yaml"), workdir=tmp_path)
    assert plan.resources.executor == "local" and plan.max_parallel == 1
    submitted = submit_sweep(plan)
    driver = submitted.jobs[0]
    deadline = time.monotonic() + 240
    while not driver.done() and time.monotonic() < deadline:
        time.sleep(0.5)
    if not driver.done():
        driver.cancel()
        pytest.fail("the local sweep did not finish in 240 s")
    assert driver.result() == "FINISHED"

    # One element at a time: the second starts only after the first ended.
    log = (plan.folder / "driver" / f"{driver.job_id}_0_log.out").read_text()
    events = [line.split(" (")[0] for line in log.splitlines() if line.startswith("element ")]
    assert events == [
        "element 0",
        "element 0 ended: FINISHED",
        "element 1",
        "element 1 ended: FINISHED",
    ], log
    assert "2/2 runs finished; parent run FINISHED" in log
    # The sweep's own experiment (its name), and the children side by side in the MLflow UI.
    compare = [line for line in log.splitlines() if line.startswith("compare in MLflow: ")]
    assert len(compare) == 1 and "/#/compare-runs?runs=" in compare[0], log

    client = MlflowClient(sqlite_uri)
    parent = client.get_run(str(submitted.parent_run_id))
    assert parent.info.status == "FINISHED"
    assert client.get_experiment_by_name("quickstart") is None  # not mixed with one-off runs
    experiment = client.get_experiment_by_name("local-sw")
    assert experiment is not None
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{submitted.parent_run_id}'",
    )
    assert sorted(c.data.tags["sweep.seed"] for c in children) == ["1", "2"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.data.tags["glamhpc.compare_url"] == compare[0].split(": ", 1)[1]
    assert all(c.info.run_id in compare[0] for c in children)
    # The trainer logs MLflow's keys (glamhpc.tracking.runs.mlflow_metric_keys): never the old
    # names. (Two tiny updates finish no episode, so no success rate at all is logged here.)
    keys = {k for c in children for k in c.data.metrics}
    assert "env_steps_per_s" in keys
    assert not any(k == "success_rate" or k.startswith("success_rate/") for k in keys)

    kinds = sorted(r.kind for r in registry.load())
    assert kinds == ["element", "element", "sweep"]
    states = {r.run: r.state for r in local_rows()}
    assert states["local-sw-000"] == states["local-sw-001"] == "COMPLETED"
    result = CliRunner().invoke(app, ["logs", "local-sw-001", "--rank", "0"])
    assert result.exit_code == 0 and "run directory:" in result.output
