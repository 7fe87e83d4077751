"""`glamhpc submit`: one training run as one job (local processes or a Slurm allocation).

Order of work, so that a failure leaves nothing behind: resolve and validate everything (the
launch plan, glamhpc.launch.plan) -> write the config snapshot -> submit -> record the job. If
submission fails, the folders this call created are removed again. No MLflow run is created
here: rank 0 of the job creates it (or resumes it), so a rejected job cannot leave a run RUNNING.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import submitit

from glamhpc.launch import registry
from glamhpc.launch.executors import (
    LaunchError,
    make_executor,
    require_slurm,
    sbatch_errors,
    slurm_command,
)
from glamhpc.launch.plan import RunPlan
from glamhpc.launch.resources import Resources
from glamhpc.launch.torchrun import JobOutcome, TorchrunJob
from glamhpc.secrets import redact_text, redacted


@dataclass
class Submitted:
    job_id: str
    plan: RunPlan
    job: submitit.Job[JobOutcome]

    @property
    def log_path(self) -> Path:
        return self.plan.folder / f"{self.job_id}_0_log.out"


def active_jobs(name: str) -> list[str]:
    """Ids of this user's queued or running Slurm jobs with exactly this job name."""
    out = slurm_command(["squeue", "-h", "--me", "-n", name, "-o", "%i"])
    return [line.strip() for line in out.splitlines() if line.strip()]


def refuse_if_active(name: str, what: str, hint: str = "") -> None:
    """Stop before submitting a second job for a run or sweep that still has one."""
    running = active_jobs(name)
    if running:
        raise LaunchError(f"{what} is already queued or running as job {', '.join(running)}{hint}")


def submit_run(plan: RunPlan) -> Submitted:
    """Write the snapshot and submit; on any failure remove what this call created."""
    res = plan.resources
    if res.executor == "slurm":
        require_slurm()
        refuse_if_active(
            plan.job_name,
            f"run {plan.run_name}",
            "; cancel it first (glamhpc cancel) or use another --run-name",
        )
    created = _create_dirs(plan.run_dir, plan.folder)
    try:
        # The batch script holds launch.setup as written (it is shell: the real secrets): only
        # its owner may read it or anything else submitit writes here (pickles, node logs).
        os.chmod(plan.folder, 0o700)
        # The ranks read the snapshot; they need neither the setup nor URI credentials (those
        # reach them through the environment, glamhpc.tracking.uri.resolve_uri).
        plan.run.write_launch_snapshot(redacted(plan.cfg))
        executor = make_executor(res, plan.folder, plan.job_name)
        with sbatch_errors(), private_files():
            # The node task only runs torchrun: its pickled copy needs no setup secrets.
            job = executor.submit(TorchrunJob(stored_resources(res)), plan.spec)
    except BaseException:
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        raise
    registry.append(
        registry.JobRecord(
            job_id=str(job.job_id),
            kind="run",
            name=plan.run_name,
            executor=res.executor,
            folder=str(plan.folder),
            runs=[plan.run_name],
            run_dirs=[str(plan.run_dir)],
            experiment=plan.cfg.experiment,
            tracking_uri=plan.cfg.tracking.uri,
            workdir=plan.spec.workdir,
        )
    )
    return Submitted(str(job.job_id), plan, job)


def stored_resources(res: Resources) -> Resources:
    """``res`` as it may be pickled into the job folder: ``setup`` redacted (only the batch
    script, written by submitit from the executor's parameters, runs it)."""
    return dataclasses.replace(res, setup=tuple(redact_text(line) for line in res.setup))


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files created inside the block are readable by their owner only (umask 077): submitit's
    batch script carries launch.setup, its pickles the job's arguments."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _create_dirs(*paths: Path) -> list[Path]:
    """mkdir -p each path; return the ones that did not exist (the ones to remove on failure)."""
    created = []
    for path in paths:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        if missing:
            created.append(missing[-1])
        path.mkdir(parents=True, exist_ok=True)
    return created
