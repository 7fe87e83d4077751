"""Preemption reads as preemption, and every requeue counts (issue 14), on the local cluster.

- `glamhpc preempt JOB` sends what Slurm sends before a time limit; the job says one line
  ("preempted at update N, checkpoint saved, requeued as attempt 2"), prints no traceback, its
  step is not FAILED, and `glamhpc jobs` and the MLflow run show the requeue.
- A requeue Slurm starts itself (`scontrol requeue`) is counted: past launch.max_requeues the
  next attempt stops with one line instead of training as "attempt 1" again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.launch import plan_run, submit_run
from glamhpc.launch.jobs import job_state
from glamhpc.launch.logs import LogTarget, read_logs
from glamhpc.launch.submit import Submitted
from tests.slurm.conftest import REPO, TINY, tiny_config, wait_state, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
runner = CliRunner()


@dataclass
class Jobs:
    uri: str
    preempted: Submitted
    bounded: Submitted


@pytest.fixture(scope="module")
def jobs(
    slurm_cluster: None, _sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Jobs]:
    root = tmp_path_factory.mktemp("slurm-preempt")
    shutil.copy(_sqlite_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("GLAMHPC_STATE_DIR", str(root / "state"))
    long = ("train.max_updates=25", "train.checkpoint_every=1000")
    plans = {
        "preempted": plan_run(tiny_config(root, uri, *long), "rehearsed", workdir=root),
        "bounded": plan_run(
            # Never finishes by itself: the requeue and the bound end it.
            tiny_config(root, uri, "train.max_updates=100000", "launch.max_requeues=0"),
            "bounded",
            workdir=root,
        ),
    }
    submitted = {key: submit_run(plan) for key, plan in plans.items()}
    try:
        yield Jobs(uri, **submitted)
    finally:
        for job in submitted.values():
            job.job.cancel(check=False)
        mp.undo()


def _started(job: Submitted) -> None:
    journal = job.plan.run_dir / "logs" / "metrics.jsonl"
    wait_until(lambda: journal.is_file() and journal.read_text().strip(), 240, "a first update")
    assert not (job.plan.run_dir / "DONE").exists(), "finished before it could be interrupted"


def _log(job: Submitted) -> str:
    return read_logs(LogTarget(job.job_id, job.plan.folder, "slurm"))


def _sacct(job_id: str) -> list[list[str]]:
    out = subprocess.run(
        ["sacct", "-D", "-n", "-P", "-j", job_id, "-o", "JobID,State,ExitCode"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def test_preempt_reads_as_preemption_and_is_counted(jobs: Jobs) -> None:
    job = jobs.preempted
    _started(job)
    said = runner.invoke(app, ["preempt", job.job_id])
    assert said.exit_code == 0, said.output
    assert f"sent USR2 to job {job.job_id}" in said.output and "attempt 2" in said.output
    wait_until(lambda: job_state(job.job_id) in ("PENDING", "REQUEUED"), 120, "the requeue")
    table = runner.invoke(app, ["jobs"], env={"COLUMNS": "160"})
    assert "2 (preempted)" in table.output, table.output
    assert wait_state(job.job_id, 300) == "COMPLETED", _log(job)
    log = _log(job)
    lines = [line for line in log.splitlines() if "checkpoint saved, requeued as attempt 2" in line]
    assert len(lines) == 1 and "preempted at update " in lines[0], log[-4000:]
    assert "Traceback" not in log and "SignalException" not in log, log[-4000:]
    assert "exit code 255" not in log and "attempt 2:" in log
    # Accounting: the first attempt REQUEUED, none of its steps FAILED (the requeue cancels
    # them), the second attempt COMPLETED.
    rows = _sacct(job.job_id)
    assert [state for jid, state, _ in rows if jid == job.job_id] == ["REQUEUED", "COMPLETED"]
    assert not [row for row in rows if row[1].startswith("FAILED")], rows
    run_id = (job.plan.run_dir / "mlflow_run_id").read_text().strip()
    tags = MlflowClient(jobs.uri).get_run(run_id).data.tags
    assert tags["glamhpc.requeues"] == "1" and tags["glamhpc.requeue_reason"] == "preempted"
    assert (job.plan.run_dir / "DONE").is_file()


def test_a_requeue_slurm_starts_is_counted_and_bounded(jobs: Jobs) -> None:
    job = jobs.bounded
    _started(job)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=30)
    assert wait_state(job.job_id, 300) == "FAILED", _log(job)
    log = _log(job)
    stops = [line for line in log.splitlines() if "not started: job" in line]
    assert len(stops) == 1, log[-4000:]
    assert f"job {job.job_id} was requeued 1 time (last: requeued" in stops[0]
    assert "more than launch.max_requeues=0" in stops[0] and "resubmit" in stops[0]
    assert "attempt 2" not in log and "Traceback" not in log, log[-4000:]
    table = runner.invoke(app, ["jobs"], env={"COLUMNS": "160"})
    row = next(line for line in table.output.splitlines() if line.split()[:1] == [job.job_id])
    assert "2 (requeued" in row, table.output


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("GLAMHPC_SLURM_SLOW") != "1",
    reason="slow (minutes): set GLAMHPC_SLURM_SLOW=1 (.ci/run does)",
)
def test_plain_sbatch_template_preempted_reads_as_preemption(
    tmp_path: Path, sqlite_uri: str
) -> None:
    """`glamhpc node` (the template's task) ends the signalled step with status 0 and one line."""
    config = tmp_path / "tiny.yaml"
    overrides = dict(item.split("=", 1) for item in TINY)
    data: dict[str, dict[str, object]] = {}
    settings = {**overrides, "train.max_updates": "25", "tracking.uri": sqlite_uri}
    for key, value in settings.items():
        section, field = key.split(".")
        data.setdefault(section, {})[field] = yaml.safe_load(value)
    data["env"]["level"] = "BabyAI-GoToRedBallNoDists-v0"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "CONFIG": str(config), "RUN_NAME": "tpl", "PYTHON": sys.executable}
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
    try:
        journal = tmp_path / "runs" / "quickstart" / "tpl" / "logs" / "metrics.jsonl"
        wait_until(lambda: journal.is_file() and journal.read_text().strip(), 240, "an update")
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        assert wait_state(job_id, 300) == "COMPLETED"
    finally:
        subprocess.run(["scancel", job_id], check=False, timeout=30)
    log = (tmp_path / f"glamhpc-{job_id}.out").read_text()
    assert "stopped on SIGUSR2 at update" in log and "checkpoint saved; requeueing" in log, log
    assert "Traceback" not in log and "attempt 2" in log
    assert not [row for row in _sacct(job_id) if row[1].startswith("FAILED")], _sacct(job_id)


def test_a_two_node_job_preempted_resumes_and_reads_as_preemption(
    slurm_cluster: None, _sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both nodes stop, only rank 0's node requeues; attempt 2 runs on both nodes again."""
    shutil.copy(_sqlite_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("GLAMHPC_STATE_DIR", str(tmp_path / "state"))
    cfg = tiny_config(tmp_path, uri, "train.max_updates=25", "train.checkpoint_every=1000", nodes=2)
    job = submit_run(plan_run(cfg, "two-node-preempt", workdir=tmp_path))
    try:
        _started(job)
        said = runner.invoke(app, ["preempt", job.job_id])
        assert said.exit_code == 0, said.output
        assert wait_state(job.job_id, 400) == "COMPLETED", _log(job)[-4000:]
    finally:
        job.job.cancel(check=False)
    log = _log(job)
    assert "checkpoint saved, requeued as attempt 2" in log, log[-4000:]
    assert "node 2/2 on n2, attempt 2" in log and "Traceback" not in log, log[-4000:]
    rows = _sacct(job.job_id)
    assert [state for jid, state, _ in rows if jid == job.job_id] == ["REQUEUED", "COMPLETED"]
    assert not [row for row in rows if row[1].startswith("FAILED")], rows
    assert (job.plan.run_dir / "DONE").is_file()
