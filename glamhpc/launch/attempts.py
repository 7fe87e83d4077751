"""How many times a job was requeued, by whom and why: the count `launch.max_requeues` bounds.

Two sources, because neither sees everything:

- our own count (``RunSpec.requeues``), raised each time the node task requeues the job after the
  ranks saved; it knows the reason (time limit or preemption signal) but not the requeues Slurm
  starts itself (node failure, preemption in requeue mode, an admin's ``scontrol requeue``);
- ``SLURM_RESTART_COUNT``, which Slurm sets in a requeued job's environment and raises on every
  requeue, ours included.

The requeues so far are the larger of the two. Global rank 0's node task records each attempt in
``<job folder>/<job id>_attempts.json`` (attempt, requeues, last reason, update reached), which
`glamhpc jobs` reads without asking Slurm or MLflow. This module imports no torch (login node).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from glamhpc.fsutil import atomic_write_json

#: The node task's exit status when the job stops because launch.max_requeues is exhausted.
REQUEUE_LIMIT_EXIT = 3
#: MLflow tags of a run's requeue count and last reason (through GLAMHPC_RUN_TAGS, the run's tags).
REQUEUES_TAG = "glamhpc.requeues"
REASON_TAG = "glamhpc.requeue_reason"
#: Slurm's state of an earlier attempt (sacct --duplicates) -> the reason `glamhpc jobs` shows.
SLURM_REASONS = {
    "NODE_FAIL": "node failure",
    "PREEMPTED": "preempted",
    "TIMEOUT": "time limit",
    "REQUEUED": "requeued (scontrol requeue)",
}


@dataclass(frozen=True)
class Attempts:
    attempt: int
    """1 for the first allocation, 2 after one requeue, ..."""
    requeues: int
    reason: str = ""
    """Why the job was last requeued: preempted, time limit, node failure, ..."""
    update: int | None = None
    """The update the ranks had reached when they last stopped on a signal."""


def slurm_restarts(environ: Mapping[str, str]) -> int:
    """SLURM_RESTART_COUNT (0 in a first allocation, outside Slurm, or when unreadable)."""
    value = environ.get("SLURM_RESTART_COUNT", "0").strip()
    return int(value) if value.isdigit() else 0


def counted_requeues(own: int, environ: Mapping[str, str]) -> int:
    """Requeues so far, whoever started them: ours (``own``) or Slurm's."""
    return max(own, slurm_restarts(environ))


def attempts_path(folder: Path | str, job_id: str) -> Path:
    return Path(folder) / f"{job_id}_attempts.json"


def read_attempts(folder: Path | str, job_id: str) -> Attempts | None:
    """The recorded attempts of a job (None when absent or not what we write; never raises)."""
    try:
        data = json.loads(attempts_path(folder, job_id).read_text())
        update = data.get("update")
        return Attempts(
            attempt=int(data["attempt"]),
            requeues=int(data["requeues"]),
            reason=str(data.get("reason", ""))[:60],
            update=update if isinstance(update, int) else None,
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def write_attempts(folder: Path | str, job_id: str, attempts: Attempts) -> None:
    try:
        atomic_write_json(attempts_path(folder, job_id), asdict(attempts))
    except OSError as exc:  # advisory, like the job result: never fail the job over it
        print(f"glamhpc: could not record the job's attempts: {exc}", flush=True)


def slurm_reason(job_id: str) -> str:
    """Why Slurm requeued ``job_id`` last, from the state of its previous attempt in accounting
    (best effort: accounting may lag or be absent)."""
    try:
        out = subprocess.run(
            ["sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "State"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "requeued by Slurm"
    states = [line.split()[0] for line in out.splitlines() if line.strip()]
    # The last line is this attempt (RUNNING); the one before it is how the previous one ended.
    previous = states[-2] if len(states) >= 2 else ""
    return SLURM_REASONS.get(previous, "requeued by Slurm")


def stop_reason(first_signal: str, elapsed_s: float, time_min: int | None, delay_s: int) -> str:
    """preempted or time limit, from the first signal and how long the attempt ran.

    TERM first is a preemption (Slurm and submitit send TERM before USR2 then). USR2 alone is the
    time-limit warning when it came near the end of the allocation (Slurm checks limits about
    every 30 s, so it may come up to ~60 s early), else a preemption or its rehearsal.
    """
    if first_signal == "SIGTERM" or time_min is None:
        return "preempted"
    return "time limit" if elapsed_s >= time_min * 60 - delay_s - 90 else "preempted"
