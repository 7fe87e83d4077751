"""`glamhpc cancel`: a job id, an array element, a run, a sweep (array and finalizer) or an
evaluation array, by id or by name. Only jobs glamhpc submitted are ever cancelled.

`glamhpc preempt` rehearses a preemption on the same targets: it sends the job's processes the
signal Slurm sends before a time limit, and the job goes down the real checkpoint-and-requeue path.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from glamhpc.launch import registry
from glamhpc.launch.attempts import read_attempts
from glamhpc.launch.executors import LaunchError, slurm_command
from glamhpc.launch.jobs import JOB_ID, is_queued, job_state, local_alive
from glamhpc.launch.resources import job_name, parse_job_name

#: Registry kinds a name given to `cancel` may stand for (the newest such submission wins).
NAMED_KINDS = ("run", "sweep", "eval")


@dataclass
class Cancelled:
    job_ids: list[str]
    description: str


def _cancel_local(job_id: str) -> None:
    if local_alive(job_id):
        # What submitit's LocalJob.cancel sends: the controller stops its tasks on SIGINT.
        os.kill(int(job_id), signal.SIGINT)


def _records_for(target: str) -> list[registry.JobRecord]:
    if JOB_ID.match(target):
        record = registry.by_job_id(target)
        return [record] if record is not None else []
    records = registry.by_name(target)
    # The newest submission under that name (a sweep and its finalizer share the name).
    newest = [r for r in records if r.kind in NAMED_KINDS][:1]
    if newest and newest[0].kind == "sweep":
        finals = [
            r
            for r in records
            if r.kind == "finalize" and r.parent_run_id == newest[0].parent_run_id
        ]
        newest += finals[:1]
    return newest


def cancel(target: str) -> Cancelled:
    """Cancel a job id, an array element, a run name, a sweep name (its array and finalizer) or
    an evaluation array by its agent's label.

    A cancelled sweep's parent run is closed as KILLED at once instead of waiting for the
    finalizer, which is cancelled too.
    """
    records = _records_for(target)
    if not records:
        if not JOB_ID.match(target):
            # Maybe submitted from another machine: Slurm knows the job name.
            for kind in NAMED_KINDS:
                out = slurm_command(
                    ["squeue", "-h", "--me", "-n", job_name(kind, target), "-o", "%A"]
                )
                ids = sorted({line.strip() for line in out.splitlines() if line.strip()})
                if ids:
                    slurm_command(["scancel", *ids])
                    return Cancelled(ids, f"{kind} {target}")
            raise LaunchError(f"no job, run or sweep named '{target}' (see `glamhpc jobs`)")
        _check_glamhpc_job(target)
        slurm_command(["scancel", target])
        return Cancelled([target], f"job {target}")
    ids = []
    main = records[0]
    job_id = target if JOB_ID.match(target) else main.job_id
    if main.executor == "local":
        _cancel_local(job_id)
        ids.append(job_id)
    else:
        slurm_command(["scancel", job_id])
        ids.append(job_id)
    whole_sweep = main.kind == "sweep" and "_" not in job_id
    if whole_sweep:
        for extra in records[1:]:
            if extra.kind == "finalize":
                slurm_command(["scancel", extra.job_id])
                ids.append(extra.job_id)
        if main.parent_run_id and main.executor == "slurm":
            from glamhpc.tracking import finalize_parent

            finalize_parent(main.parent_run_id, "KILLED", main.tracking_uri)
    what = f"sweep {main.name}" if whole_sweep else f"{main.kind} {main.name}"
    return Cancelled(ids, what)


def _check_glamhpc_job(job_id: str) -> None:
    """Refuse to cancel a job glamhpc did not submit (the id may be a typo)."""
    out = slurm_command(["squeue", "-h", "-j", job_id, "-o", "%j"]) if is_queued(job_id) else ""
    names = [line.strip() for line in out.splitlines() if line.strip()]
    if not names:
        raise LaunchError(f"job {job_id} is not queued or running")
    if parse_job_name(names[0]) is None:
        raise LaunchError(f"job {job_id} ({names[0]}) was not submitted by glamhpc: not cancelled")


#: What `preempt` sends: Slurm's pre-timeout signal (``--signal=USR2@delay`` in every job glamhpc
#: submits). To the job steps only, as Slurm does: the batch shell of submitit's script would
#: die on USR2 (``scancel --batch`` or ``--full`` would end the job instead of requeueing it).
PREEMPT_SIGNAL = "USR2"


@dataclass
class Preempted:
    job_id: str
    description: str
    next_attempt: int


def preempt(target: str) -> Preempted:
    """Send a running Slurm job (id, array element, run or sweep name) Slurm's pre-timeout
    signal: its ranks save at the end of the current update and the job requeues itself."""
    records = _records_for(target)
    if records:
        main = records[0]
        job_id = target if JOB_ID.match(target) else main.job_id
        what = f"{main.kind} {main.name}"
        if main.executor != "slurm":
            raise LaunchError(
                f"{what} runs with the local executor; `glamhpc preempt` rehearses a Slurm "
                "preemption: submit with --executor slurm (stop this one with `glamhpc cancel`)"
            )
    elif JOB_ID.match(target):
        _check_glamhpc_job(target)
        job_id, what, main = target, f"job {target}", None
    else:
        raise LaunchError(f"no job, run or sweep named '{target}' (see `glamhpc jobs`)")
    state = job_state(job_id)
    if state != "RUNNING":
        raise LaunchError(
            f"job {job_id} is {state or 'unknown to Slurm'}, not RUNNING: only a running job "
            "can be preempted (see `glamhpc jobs`)"
        )
    slurm_command(["scancel", f"--signal={PREEMPT_SIGNAL}", job_id])
    attempts = read_attempts(Path(main.folder), job_id) if main is not None else None
    current = attempts.attempt if attempts is not None else 1
    return Preempted(job_id, what, current + 1)
