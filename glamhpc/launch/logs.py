"""`glamhpc logs`: where a job's node logs are, reading them, and following them as they grow.

submitit writes one log per node task, ``<job>_<task>_log.out`` (array elements: ``<job>_<index>
_<task>_log.out``), into the folder the registry records; torchrun prefixes each rank's lines
with ``[rankR]:``, which `select_rank` strips to show one rank.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from glamhpc.launch import registry
from glamhpc.launch.executors import LaunchError, slurm_command
from glamhpc.launch.jobs import JOB_ID, TERMINAL_STATES, job_state, split_job_id
from glamhpc.launch.torchrun import rank_prefix

#: Registry kinds whose job is an array: a log belongs to one of its elements.
ARRAY_KINDS = ("sweep", "eval")


@dataclass
class LogTarget:
    job_id: str
    folder: Path
    executor: str


def resolve_log_target(job: str) -> LogTarget:
    """JOB may be a job id, an array element (``12_3``) or a run name."""
    if not JOB_ID.match(job):
        for entry in reversed(registry.load()):
            if entry.kind in ("run", "element") and entry.name == job:
                return LogTarget(entry.job_id, Path(entry.folder), entry.executor)
            if entry.kind in ARRAY_KINDS and job in entry.runs and entry.executor == "slurm":
                position = entry.runs.index(job)
                return LogTarget(f"{entry.job_id}_{position}", Path(entry.folder), "slurm")
        raise LaunchError(f"no job or run named '{job}' in {registry.registry_path()}")
    record = registry.by_job_id(job)
    index = split_job_id(job)[1]
    if record is not None:
        if record.kind == "eval" and not index:
            raise LaunchError(
                f"job {job} is the evaluation array of {record.name} ({len(record.runs)} "
                f"parts): pick one, e.g. `glamhpc logs {job}_0` or `glamhpc logs {record.runs[0]}`"
            )
        if record.kind == "sweep" and not index:
            if record.executor == "local":
                raise LaunchError(
                    f"job {job} drives the local sweep {record.name}: read an element's log "
                    f"by run name, e.g. `glamhpc logs {record.runs[0]}`"
                )
            raise LaunchError(
                f"job {job} is the array of sweep {record.name} ({len(record.runs)} elements): "
                f"pick one, e.g. `glamhpc logs {job}_0` or `glamhpc logs {record.runs[0]}`"
            )
        return LogTarget(job, Path(record.folder), record.executor)
    # Not submitted from here (another machine's registry): ask Slurm where the output goes.
    out = slurm_command(["scontrol", "show", "job", "-o", job])
    match = re.search(r"StdOut=(\S+)", out)
    if not match:
        raise LaunchError(f"Slurm does not know where job {job}'s output is")
    return LogTarget(job, Path(match.group(1)).parent, "slurm")


def log_files(target: LogTarget) -> list[Path]:
    """One log per node task, in node order (``<job>_<task>_log.out``, submitit's naming)."""
    pattern = re.compile(re.escape(target.job_id) + r"_(\d+)_log\.out$")
    found = []
    if target.folder.is_dir():
        for path in target.folder.iterdir():
            match = pattern.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def select_rank(lines: list[str], rank: int | None) -> list[str]:
    """All lines, or only rank R's (torchrun's ``[rankR]:`` prefix removed) - pure."""
    if rank is None:
        return lines
    prefix = rank_prefix(rank)
    return [line[len(prefix) :] for line in lines if line.startswith(prefix)]


def read_logs(target: LogTarget, rank: int | None = None) -> str:
    files = log_files(target)
    if not files:
        raise LaunchError(f"no log yet for job {target.job_id} in {target.folder} (still pending?)")
    chunks = []
    for index, path in enumerate(files):
        lines = path.read_text(errors="replace").splitlines(keepends=True)
        selected = select_rank(lines, rank)
        if rank is None and len(files) > 1:
            chunks.append(f"==> node {index}: {path} <==\n")
        chunks.extend(selected)
    return "".join(chunks)


def follow_logs(
    target: LogTarget,
    out: TextIO,
    rank: int | None = None,
    poll_s: float = 1.0,
    state: Callable[[str], str] = job_state,
    timeout_s: float | None = None,
) -> str:
    """Print the logs as they grow until the job ends; returns its final state."""
    offsets: dict[Path, int] = {}
    partial: dict[Path, str] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    quiet_polls = 0
    final = ""
    while True:
        grew = False
        for path in log_files(target):
            with path.open("rb") as fh:
                fh.seek(offsets.get(path, 0))
                data = fh.read()
            if not data:
                continue
            grew = True
            offsets[path] = offsets.get(path, 0) + len(data)
            text = partial.pop(path, "") + data.decode(errors="replace")
            lines = text.splitlines(keepends=True)
            if lines and not lines[-1].endswith("\n"):
                partial[path] = lines.pop()
            out.write("".join(select_rank(lines, rank)))
            out.flush()
        current = state(target.job_id)
        if current in TERMINAL_STATES:
            final = current
            quiet_polls = 0 if grew else quiet_polls + 1
            # One more quiet read after the end: the last lines may land just after the state.
            if quiet_polls >= 2:
                return final
        if deadline is not None and time.monotonic() > deadline:
            return current
        time.sleep(poll_s)
