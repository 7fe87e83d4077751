"""Slow real-cluster tests (minutes): a real time limit, and the plain sbatch template.

They run when GLAMHPC_SLURM_SLOW=1 (set by .ci/run), so a local `make test` with a cluster up
stays quick.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from glamhpc.fsutil import atomic_write_text
from glamhpc.launch import plan_run, submit_run
from glamhpc.launch.logs import LogTarget, read_logs
from tests.slurm.conftest import REPO, TINY, tiny_config, wait_state, wait_until

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.usefixtures("slurm_cluster"),
    pytest.mark.skipif(
        os.environ.get("GLAMHPC_SLURM_SLOW") != "1",
        reason="slow (minutes): set GLAMHPC_SLURM_SLOW=1 (.ci/run does)",
    ),
]


def test_time_limit_signal_requeues_and_the_run_completes(
    state_dir: Path, tmp_path: Path, sqlite_uri: str
) -> None:
    # 2 minutes with USR2 30 s before: Slurm checks limits every ~30 s, so the signal comes
    # 60-90 s into the attempt, leaving >= 30 s to save and requeue.
    cfg = tiny_config(
        tmp_path, sqlite_uri, "train.max_updates=100000", "launch.signal_delay_s=30", time="2"
    )
    plan = plan_run(cfg, "time-limit", workdir=tmp_path)
    job = submit_run(plan)
    try:
        preempted = plan.run_dir / "PREEMPTED"
        wait_until(preempted.exists, 200, "the time-limit signal to stop the first attempt")
        # The trainer wrote PREEMPTED after its checkpoint and before the requeue: let the
        # requeued attempt end soon after resuming (train.max_updates may change on resume,
        # as a user extending or shortening a run would do by resubmitting).
        done_updates = int(preempted.read_text().strip())
        snapshot = yaml.safe_load(plan.config_path.read_text())
        snapshot["train"]["max_updates"] = done_updates + 2
        atomic_write_text(plan.config_path, yaml.safe_dump(snapshot, sort_keys=False))
        assert wait_state(job.job_id, 240) == "COMPLETED"
    finally:
        job.job.cancel(check=False)
    log = read_logs(LogTarget(job.job_id, plan.folder, "slurm"))
    # The node task saw the time limit, not a preemption.
    assert "time limit at update" in log and "checkpoint saved, requeued as attempt 2" in log
    assert (plan.run_dir / "DONE").is_file()
    run_id = (plan.run_dir / "mlflow_run_id").read_text().strip()
    steps = [m.step for m in MlflowClient(sqlite_uri).get_metric_history(run_id, "update")]
    assert len(steps) == len(set(steps)) == done_updates + 2


def test_plain_sbatch_template_trains(tmp_path: Path, sqlite_uri: str) -> None:
    config = tmp_path / "tiny.yaml"
    overrides = dict(item.split("=", 1) for item in TINY)
    data: dict[str, dict[str, object]] = {}
    for key, value in {**overrides, "train.max_updates": "2", "tracking.uri": sqlite_uri}.items():
        section, field = key.split(".")
        data.setdefault(section, {})[field] = yaml.safe_load(value)
    data["env"]["level"] = "BabyAI-GoToRedBallNoDists-v0"
    config.write_text(yaml.safe_dump(data))
    env = {
        **os.environ,
        "CONFIG": str(config),
        "RUN_NAME": "from-template",
        "PYTHON": sys.executable,
    }
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--nodes=1",
            "--gpus-per-node=0",
            "--cpus-per-task=1",
            "--time=10",
            f"--chdir={tmp_path}",
            str(REPO / "slurm" / "templates" / "glamhpc.sbatch"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    job_id = out.stdout.strip().split(";")[0]
    assert wait_state(job_id, 240) == "COMPLETED", (tmp_path / f"glamhpc-{job_id}.out").read_text()
    run_dir = tmp_path / "runs" / "quickstart" / "from-template"
    assert (run_dir / "DONE").is_file()
    assert "[rank0]:" in (tmp_path / f"glamhpc-{job_id}.out").read_text()
