"""Real Slurm jobs on the local cluster: training, 2 nodes, preemption, cancel, bad input, sweeps.

The training jobs are submitted together at the start of the module so that they overlap on the
cluster; each test then waits (with a timeout) for the job it checks.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.launch import plan_run, submit_run
from glamhpc.launch.executors import render_sbatch
from glamhpc.launch.jobs import job_state
from glamhpc.launch.logs import LogTarget, log_files, read_logs
from glamhpc.launch.submit import Submitted
from tests.slurm.conftest import QUICKSTART, tiny_config, wait_state, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
#: Long enough (~0.3-0.8 s per update here) that the preemption lands mid-run.
UPDATES = 30
runner = CliRunner()


@dataclass
class Batch:
    root: Path
    uri: str
    single: Submitted
    preempt: Submitted
    two_node: Submitted


@pytest.fixture(scope="module")
def batch(
    slurm_cluster: None,
    _sqlite_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Batch]:
    root = tmp_path_factory.mktemp("slurm-jobs")
    shutil.copy(_sqlite_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("GLAMHPC_STATE_DIR", str(root / "state"))
    same = (f"train.max_updates={UPDATES}", "train.checkpoint_every=1000")
    # `single` and `preempt` are the same run under two names: the uninterrupted one is the
    # reference for the preempted one's final parameters.
    jobs = {
        "single": plan_run(tiny_config(root, uri, *same), "single", workdir=root),
        "preempt": plan_run(tiny_config(root, uri, *same), "preempt", workdir=root),
        "two_node": plan_run(
            tiny_config(root, uri, "train.max_updates=2", nodes=2), "two-node", workdir=root
        ),
    }
    submitted = {key: submit_run(plan) for key, plan in jobs.items()}
    try:
        yield Batch(root, uri, **submitted)
    finally:
        for job in submitted.values():
            job.job.cancel(check=False)
        mp.undo()


def _metric_steps(uri: str, run_dir: Path, key: str = "update") -> list[int]:
    client = MlflowClient(uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _run_status(uri: str, run_dir: Path) -> str:
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    return str(MlflowClient(uri).get_run(run_id).info.status)


def test_preemption_requeues_and_resumes_exactly(batch: Batch) -> None:
    job = batch.preempt
    run_dir = job.plan.run_dir
    journal = run_dir / "logs" / "metrics.jsonl"
    wait_until(
        lambda: journal.is_file() and journal.read_text().strip(),
        240,
        "the first update of the run to preempt",
    )
    assert not (run_dir / "DONE").exists(), "the run finished before it could be preempted"
    job.job._interrupt()  # what Slurm does on preemption: TERM, then USR2 to every process
    wait_until(lambda: job_state(job.job_id) in ("PENDING", "REQUEUED"), 90, "the requeue")
    assert wait_state(job.job_id, 240) == "COMPLETED"
    outcome = job.job.result()
    assert outcome.status == "done" and outcome.requeues == 1
    log = read_logs(LogTarget(job.job_id, job.plan.folder, "slurm"))
    assert "preempted at update" in log and "checkpoint saved, requeued as attempt 2" in log
    assert "Traceback" not in log
    assert (run_dir / "PREEMPTED").is_file() and (run_dir / "DONE").is_file()
    # Metrics: every update once, none lost and none logged twice across the two attempts.
    assert _metric_steps(batch.uri, run_dir) == _metric_steps(batch.uri, batch.single.plan.run_dir)
    assert _run_status(batch.uri, run_dir) == "FINISHED"
    # Final parameters equal the uninterrupted run's, bit for bit (CPU-deterministic trainer).
    assert wait_state(batch.single.job_id, 240) == "COMPLETED"
    from safetensors.torch import load_file

    reference = batch.single.plan.run_dir / "model"
    files = sorted(p.name for p in reference.glob("*.safetensors"))
    assert files and files == sorted(p.name for p in (run_dir / "model").glob("*.safetensors"))
    for name in files:
        mine, theirs = load_file(run_dir / "model" / name), load_file(reference / name)
        assert mine.keys() == theirs.keys()
        for key, tensor in mine.items():
            assert tensor.equal(theirs[key]), f"{name}:{key} differs after resume"


def test_single_node_job_trains_and_logs_metrics(batch: Batch) -> None:
    job = batch.single
    assert wait_state(job.job_id, 240) == "COMPLETED", read_logs(
        LogTarget(job.job_id, job.plan.folder, "slurm")
    )
    outcome = job.job.result()
    assert outcome.status == "done" and outcome.requeues == 0
    run_dir = job.plan.run_dir
    assert (run_dir / "DONE").is_file()
    assert _run_status(batch.uri, run_dir) == "FINISHED"
    steps = _metric_steps(batch.uri, run_dir)
    assert len(steps) == UPDATES and len(set(steps)) == UPDATES
    # What --dry-run prints is exactly what was submitted.
    submitted = (job.plan.folder / f"{job.job_id}_submission.sh").read_text()
    assert submitted == render_sbatch(job.plan.resources, job.plan.folder, job.plan.job_name)


def test_jobs_and_logs_commands(batch: Batch) -> None:
    job = batch.single
    wait_state(job.job_id, 240)
    result = runner.invoke(app, ["jobs"])
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.split()[:1] == [job.job_id])
    assert "single" in line and "COMPLETED" in line and ("n1" in line or "n2" in line)
    result = runner.invoke(app, ["logs", job.job_id, "--rank", "0"])
    assert result.exit_code == 0, result.output
    assert "run directory:" in result.output and "[rank0]" not in result.output
    result = runner.invoke(app, ["logs", "single", "--follow"])
    assert result.exit_code == 0 and "training finished" in result.output


def test_two_nodes_form_one_world(batch: Batch) -> None:
    job = batch.two_node
    target = LogTarget(job.job_id, job.plan.folder, "slurm")
    state = wait_state(job.job_id, 300)
    assert state == "COMPLETED", read_logs(target)[-3000:]
    assert (job.plan.run_dir / "DONE").is_file()
    logs = [path.read_text() for path in log_files(target)]
    assert len(logs) == 2
    # One torchrun agent per node, each on its own host, and one rank on each.
    assert "node 1/2 on n1" in logs[0] and "node 2/2 on n2" in logs[1]
    # Rank 0 (node 1) reports every update; rank 1 prints nothing on a healthy run, but node
    # 2's agent kept its rank's own log folder.
    assert "[rank0]:update 2/2" in logs[0] and "[rank0]:" not in logs[1], logs[1][-2000:]
    agents = job.plan.run_dir / "launch" / "torchrun"
    for node in (0, 1):
        assert len(list(agents.glob(f"{job.job_id}-node{node}/*/attempt_0/0"))) == 1, node
    client = MlflowClient(batch.uri)
    run_id = (job.plan.run_dir / "mlflow_run_id").read_text().strip()
    assert client.get_run(run_id).data.tags["world_size"] == "2"


def test_cancelled_job_is_reported_promptly(batch: Batch) -> None:
    # Submitted here, not with the batch: a run that never ends would slow every other test.
    cfg = tiny_config(batch.root, batch.uri, "train.max_updates=100000")
    job = submit_run(plan_run(cfg, "long", workdir=batch.root))
    try:
        wait_state(job.job_id, 240, ("RUNNING",))
        result = runner.invoke(app, ["cancel", job.job_id])
        assert result.exit_code == 0 and f"cancelled run long: {job.job_id}" in result.output
        assert wait_state(job.job_id, 15) == "CANCELLED"
        result = runner.invoke(app, ["jobs"])
        assert any(
            ln.split()[:1] == [job.job_id] and "CANCELLED" in ln
            for ln in result.output.splitlines()
        ), result.output
        # submitit (sacct-based) sees the end too: a waiting caller is released, not hung.
        wait_until(lambda: job.job.done(force_check=True), 60, "submitit to see the cancel")
    finally:
        job.job.cancel(check=False)


def test_sbatch_rejection_leaves_nothing(state_dir: Path, tmp_path: Path) -> None:
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp_path)
    try:
        result = runner.invoke(
            app,
            ["submit", str(QUICKSTART), "-e", "slurm", "-p", "no-such-partition", "-n", "rej"],
        )
    finally:
        mp.undo()
    assert result.exit_code == 2
    assert "Slurm rejected the job" in result.output and "partition" in result.output.lower()
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() and not (state_dir / "jobs.jsonl").exists()


def test_rejected_sweep_leaves_no_parent_run(
    state_dir: Path, tmp_path: Path, sqlite_uri: str
) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        f"name: rejected\nbase: {QUICKSTART}\nset: [tracking.uri={sqlite_uri}]\nseeds: [1, 2]\n"
    )
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp_path)
    try:
        result = runner.invoke(app, ["sweep", str(sweep), "-e", "slurm", "-p", "nope"])
    finally:
        mp.undo()
    assert result.exit_code == 2 and "Slurm rejected the job" in result.output, result.output
    client = MlflowClient(sqlite_uri)
    experiment = client.get_experiment_by_name("quickstart")
    active = client.search_runs([experiment.experiment_id]) if experiment else []
    assert active == []  # the parent run was created, then deleted with the failed submission
    assert not (tmp_path / "runs" / "quickstart" / "sweeps" / "rejected").exists()
