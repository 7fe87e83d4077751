"""A job's outcome as a small JSON file our own job code writes: what `glamhpc jobs` reads.

submitit records a job's return value (or traceback) as ``<job>_<task>_result.pkl`` in the
job's folder; unpickling that file runs whatever code it names, and the folder lives in a run
directory that other people, other jobs or a copied archive may have written to. So the job
callables glamhpc submits wrap their work in :func:`recorded`, which writes
``<job>_<task>_result.json`` (state, exit code, one-line message) next to submitit's files, and
the CLI reads only that. A file that is not what we write reads as "no result" (ENDED).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from glamhpc.fsutil import atomic_write_json

SUFFIX = "_result.json"
#: The states a job result may hold (Slurm's names, so `glamhpc jobs` shows one vocabulary).
STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "ENDED"})
#: Messages are one line and short: they end up in a table.
MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class JobResult:
    state: str
    exit: int
    message: str = ""


def result_path(folder: Path, job_id: str, task: int = 0) -> Path:
    return Path(folder) / f"{job_id}_{task}{SUFFIX}"


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def read_result(folder: Path, job_id: str, task: int = 0) -> JobResult | None:
    """The job's recorded result; None when absent or not a result we wrote (never raises)."""
    try:
        data = json.loads(result_path(folder, job_id, task).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("state") not in STATES:
        return None
    code = data.get("exit")
    message = data.get("message")
    return JobResult(
        str(data["state"]),
        code if isinstance(code, int) else -1,
        one_line(message) if isinstance(message, str) else "",
    )


def write_result(state: str, exit_code: int, message: str = "") -> None:
    """Inside a submitit job: record this task's outcome next to submitit's own files."""
    import submitit

    env = submitit.JobEnvironment()
    path = result_path(env.paths.folder, str(env.job_id), env.global_rank)
    try:
        atomic_write_json(path, {"state": state, "exit": exit_code, "message": one_line(message)})
    except OSError as exc:  # advisory: never hide the job's own outcome (e.g. a full disk)
        print(f"glamhpc: could not record the job result in {path}: {exc}", file=sys.stderr)


@contextmanager
def recorded() -> Iterator[None]:
    """Run a job's body and record how it ended; exceptions still propagate to submitit."""
    try:
        yield
    except KeyboardInterrupt:  # the local executor cancels with SIGINT
        write_result("CANCELLED", 130, "cancelled")
        raise
    except SystemExit as exc:  # submitit's exit after a checkpoint (requeued or stopped)
        code = exc.code if isinstance(exc.code, int) else 1
        write_result("ENDED", code, f"exited with code {code} after a checkpoint")
        raise
    except Exception as exc:
        write_result("FAILED", 1, f"{type(exc).__name__}: {exc}")
        raise
    write_result("COMPLETED", 0, "")
