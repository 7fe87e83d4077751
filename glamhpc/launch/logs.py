"""`glamhpc logs`: where a job's node logs are, reading them, and following them as they grow.

submitit writes one log per node task, ``<job>_<task>_log.out`` (array elements: ``<job>_<index>
_<task>_log.out``, stderr included), into the folder the registry records; torchrun prefixes
each rank's lines with ``[rankR]:``, which `select_rank` strips to show one rank. Rank 0 prints
one progress line per update there (glamhpc.rl.progress), so following a job shows it learn.

A sweep (its array id, or its name) is read as all its elements together, each line prefixed
with the element's run name (``[sw-001] ...``); a local sweep adds its driver's log.
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
    label: str = ""
    """Put before each line when several jobs are read together (a sweep's run names)."""


def resolve_log_targets(job: str) -> list[LogTarget]:
    """What `glamhpc logs JOB` reads: a sweep (array id or name) gives all its elements,
    labelled; anything else one unlabelled target (:func:`resolve_log_target`)."""
    if JOB_ID.match(job):
        record = registry.by_job_id(job)
        if record is not None and record.kind == "sweep" and not split_job_id(job)[1]:
            return sweep_targets(record)
    else:
        for entry in reversed(registry.load()):
            if entry.kind == "sweep" and entry.name == job:
                return sweep_targets(entry)
            if entry.kind in ("run", "element") and entry.name == job:
                break
    return [resolve_log_target(job)]


def sweep_targets(record: registry.JobRecord) -> list[LogTarget]:
    """Every element of a sweep, labelled with its run name. A Slurm array's elements are known
    at once (pending ones have no log yet); a local sweep's appear as its driver starts them."""
    if record.executor != "local":
        return [
            LogTarget(f"{record.job_id}_{index}", Path(record.folder), record.executor, run)
            for index, run in enumerate(record.runs)
        ]
    targets = [LogTarget(record.job_id, Path(record.folder), "local", f"{record.name} driver")]
    started: dict[str, registry.JobRecord] = {}
    for entry in registry.load():
        # Newest wins: a resubmitted sweep reuses its run names.
        mine = entry.kind == "element" and entry.name in record.runs
        if mine and entry.submitted >= record.submitted:
            started[entry.name] = entry
    for run in record.runs:
        if run in started:
            element = started[run]
            targets.append(LogTarget(element.job_id, Path(element.folder), "local", run))
    return targets


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
            # One target per element: resolve_log_targets reads them together.
            raise LaunchError(f"job {job} is the sweep {record.name}: use resolve_log_targets")
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


def _labelled(lines: list[str], label: str) -> list[str]:
    return [f"[{label}] {line}" for line in lines] if label else lines


def read_all(targets: list[LogTarget], rank: int | None = None) -> str:
    """One target's logs as they are; several (a sweep) with each line labelled, and a note
    for the elements that have no log yet."""
    if len(targets) == 1 and not targets[0].label:
        return read_logs(targets[0], rank)
    chunks = []
    for target in targets:
        if not log_files(target):
            chunks.append(f"[{target.label}] (no log yet: job {target.job_id} pending?)\n")
            continue
        lines = read_logs(target, rank).splitlines(keepends=True)
        chunks.extend(_labelled(lines, target.label))
    return "".join(chunks)


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
    """Print one job's logs as they grow until it ends; returns its final state."""
    finals = follow_all(lambda: [target], out, rank, poll_s, state, timeout_s)
    return finals[target.job_id]


def follow_all(
    targets: Callable[[], list[LogTarget]],
    out: TextIO,
    rank: int | None = None,
    poll_s: float = 1.0,
    state: Callable[[str], str] = job_state,
    timeout_s: float | None = None,
) -> dict[str, str]:
    """Print the logs of ``targets()`` (asked again every poll: a local sweep starts its
    elements over time) as they grow, labelled, until every one has ended; returns the state
    of each job id."""
    offsets: dict[Path, int] = {}
    partial: dict[Path, str] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    quiet_polls = 0
    while True:
        grew = False
        current = targets()
        for target in current:
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
                out.write("".join(_labelled(select_rank(lines, rank), target.label)))
                out.flush()
        states = {target.job_id: state(target.job_id) for target in current}
        if all(s in TERMINAL_STATES for s in states.values()):
            quiet_polls = 0 if grew else quiet_polls + 1
            # One more quiet read after the end: the last lines may land just after the state.
            if quiet_polls >= 2:
                return states
        if deadline is not None and time.monotonic() > deadline:
            return states
        time.sleep(poll_s)
