"""submitit executors for glamhpc, the batch script they submit, and Slurm's errors made readable.

Only two executors exist: ``local`` (submitit's LocalExecutor: real processes on this machine,
detached from the CLI) and ``slurm`` (sbatch). The executor is always named explicitly: submitit's
AutoExecutor would silently pick Slurm whenever ``sbatch`` is on PATH.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import submitit

from glamhpc.launch.resources import (
    Resources,
    check_batch_strings,
    local_parameters,
    slurm_parameters,
)


class LaunchError(RuntimeError):
    """A job cannot be launched; the message says why and what to do (one line for the CLI)."""


NO_SLURM_HINT = (
    "Slurm's sbatch is not on PATH: run with --executor local (real processes on this machine), "
    "or start a Slurm cluster on this machine with `glamhpc cluster up` (as root)"
)


#: Slurm client messages meaning "no controller to talk to" (nothing about the job itself).
_NO_CONTROLLER = (
    "Could not establish a configuration source",
    "Unable to contact slurm controller",
    "Socket timed out",
)
NO_CONTROLLER_HINT = (
    "no Slurm controller answers: start the local cluster with `glamhpc cluster up`, "
    "or run with --executor local"
)


def require_slurm() -> None:
    """Fail early with the two ways forward when this machine cannot submit to Slurm."""
    if shutil.which("sbatch") is None:
        raise LaunchError(NO_SLURM_HINT)


def slurm_command(args: list[str], timeout_s: float = 30) -> str:
    """Run a Slurm client command; its own error text becomes a LaunchError."""
    if shutil.which(args[0]) is None:
        raise LaunchError(NO_SLURM_HINT.replace("sbatch", args[0]))
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"`{shlex.join(args)}` did not answer in {timeout_s:.0f}s") from None
    if proc.returncode != 0:
        reason = slurm_reason(proc.stderr or proc.stdout) or f"{args[0]} failed"
        if any(hint in proc.stderr for hint in _NO_CONTROLLER):
            reason += f"; {NO_CONTROLLER_HINT}"
        raise LaunchError(reason)
    return proc.stdout


def slurm_reason(stderr: str) -> str:
    """The informative part of a Slurm client error (its last 'error:' lines, deduplicated)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines
    seen: list[str] = []
    for line in errors:
        if line not in seen:
            seen.append(line)
    return "; ".join(seen[-2:])


def submitit_command(folder: Path, python: str = sys.executable) -> str:
    """The command submitit's batch script runs on each node (mirrors SlurmExecutor's)."""
    return " ".join([shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def render_sbatch(
    res: Resources, folder: Path, job_name: str, array_size: int | None = None, **extra: Any
) -> str:
    """The batch script submitit will submit for these resources (used by --dry-run).

    Rendered by submitit's own function with the same parameters as the real submission, so
    what the dry run prints is what sbatch receives (a test compares the two on a cluster).
    """
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(res, job_name)
    params.update(extra)
    if array_size is not None and array_size > 1:
        params["map_count"] = array_size
    check_batch_strings({**params, "folder": folder})
    return _make_sbatch_string(command=submitit_command(folder), folder=folder, **params)


def make_executor(
    res: Resources, folder: Path, job_name: str, **extra: Any
) -> submitit.LocalExecutor | submitit.SlurmExecutor:
    """A configured submitit executor writing its pickles and node logs into ``folder``."""
    if res.executor == "slurm":
        require_slurm()
        params = slurm_parameters(res, job_name)
        params.update(extra)
        # The folder lands on the #SBATCH --output/--error lines (unquoted).
        check_batch_strings({**params, "folder": folder})
        executor: Any = submitit.SlurmExecutor(folder=folder, max_num_timeout=res.max_requeues)
        executor.update_parameters(**params)
        return executor
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=res.max_requeues)
    executor.update_parameters(**local_parameters(res))
    return executor


@contextlib.contextmanager
def sbatch_errors() -> Iterator[None]:
    """Turn a failed sbatch into a LaunchError carrying Slurm's reason, printed once.

    submitit prints sbatch's stderr itself before raising; that copy is captured so the user
    reads the reason once, as glamhpc's one-line error.
    """
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    except submitit.core.utils.FailedJobError as exc:
        reason = slurm_reason(str(exc)) or "sbatch failed without a message"
        raise LaunchError(f"Slurm rejected the job: {reason}") from None
    except FileNotFoundError as exc:
        raise LaunchError(f"{NO_SLURM_HINT} ({exc.filename} missing)") from None
