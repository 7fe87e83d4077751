"""`glamhpc jobs`, `logs` and `cancel`: this user's glamhpc jobs, from Slurm and the registry.

Slurm is the source of truth for ids, states, elapsed times and node lists (squeue for what is
queued or running, sacct for what ended, so a finished or cancelled job stays visible); only
jobs whose name starts with ``glamhpc`` are shown or cancelled. The registry adds what Slurm does
not know: which run an array element trains and where its logs are. Local jobs (processes on
this machine) come from the registry alone.
"""

from __future__ import annotations

import getpass
import os
import pickle
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from glamhpc.launch import registry
from glamhpc.launch.executors import LaunchError, slurm_command
from glamhpc.launch.resources import parse_job_name
from glamhpc.launch.torchrun import rank_prefix

#: Slurm states after which a job will not run again (REQUEUED and PREEMPTED may).
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        # local jobs
        "ENDED",
    }
)
_JOB_ID = re.compile(r"^\d+(_\d+)?$")


@dataclass
class JobRow:
    job_id: str
    array_index: str
    kind: str
    name: str
    run: str
    state: str
    elapsed: str
    nodelist: str
    executor: str = "slurm"


def _slurm_present() -> bool:
    import shutil

    return shutil.which("squeue") is not None and shutil.which("sacct") is not None


def _split_id(job_id: str) -> tuple[str, str]:
    base, _, index = job_id.partition("_")
    return base, index


def _row(
    job_id: str,
    parsed: tuple[str, str],
    state: str,
    elapsed: str,
    where: str,
    records: dict[str, registry.JobRecord],
) -> JobRow:
    kind, short = parsed
    return JobRow(
        job_id,
        _split_id(job_id)[1],
        kind,
        short,
        _run_for(kind, short, job_id, records),
        _state(state),
        elapsed,
        where,
    )


def _run_for(kind: str, name: str, job_id: str, records: dict[str, registry.JobRecord]) -> str:
    if kind == "run":
        return name
    if kind == "finalize":
        return "(closes the parent run)"
    base, index = _split_id(job_id)
    record = records.get(base)
    if record is not None and index.isdigit() and int(index) < len(record.runs):
        return record.runs[int(index)]
    return f"{name}[{index}]" if index else name


def _state(raw: str) -> str:
    # sacct: "CANCELLED by 0"; squeue: "RUNNING".
    return raw.split()[0] if raw.strip() else "UNKNOWN"


def slurm_rows(since: str = "now-2days") -> list[JobRow]:
    """This user's glamhpc jobs known to Slurm (the controller's view wins over accounting)."""
    user = getpass.getuser()
    records = {r.job_id: r for r in registry.load()}
    rows: dict[str, JobRow] = {}
    sacct = slurm_command(
        [
            "sacct",
            "-X",
            "-n",
            "-P",
            "-u",
            user,
            "-S",
            since,
            "-o",
            "JobID,JobName,State,Elapsed,NodeList",
        ]
    )
    # -t all: jobs that ended in the last minutes are still in the controller's memory, while
    # their accounting record may lag behind by a moment (a just-cancelled job would vanish).
    queue = slurm_command(
        ["squeue", "-h", "-r", "-t", "all", "-u", user, "-o", "%i|%j|%T|%M|%N|%r"]
    )
    for line in sacct.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        job_id, name, state, elapsed, nodes = parts[:5]
        parsed = parse_job_name(name)
        if parsed is None:
            continue
        where = nodes if nodes != "None assigned" else ""
        rows[job_id] = _row(job_id, parsed, state, elapsed, where, records)
    for line in queue.splitlines():
        parts = line.split("|")
        if len(parts) < 6:
            continue
        job_id, name, state, elapsed, nodes, reason = parts[:6]
        parsed = parse_job_name(name)
        if parsed is None:
            continue
        where = nodes or (f"({reason})" if reason and reason != "None" else "")
        if _state(state) == "COMPLETING":
            # A cancelled or finished job stays COMPLETING while its processes are reaped;
            # accounting knows how it ended, which is what the user asks. The listing above can
            # lag behind the job's own record, so ask for that record as job_state() does.
            ended = rows.get(job_id)
            final = ended.state if ended is not None else _accounting_state(job_id)
            if final in TERMINAL_STATES:
                if ended is None:
                    rows[job_id] = _row(job_id, parsed, final, elapsed, where, records)
                continue
        rows[job_id] = _row(job_id, parsed, state, elapsed, where, records)
    # A pending array's placeholder row ("12_[0-3]") duplicates its expanded elements.
    return sorted(rows.values(), key=lambda r: _sort_key(r.job_id))


def _sort_key(job_id: str) -> tuple[int, int, str]:
    base, index = _split_id(job_id)
    return (
        int(base) if base.isdigit() else 0,
        int(index) if index.isdigit() else -1,
        job_id,
    )


def _local_alive(pid: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A recycled pid runs something else: only submitit's controller counts.
    return b"submitit" in cmdline


def local_state(record: registry.JobRecord, job_id: str | None = None) -> str:
    job_id = job_id or record.job_id
    if _local_alive(job_id):
        return "RUNNING"
    result = Path(record.folder) / f"{job_id}_0_result.pkl"
    if result.is_file():
        try:
            with result.open("rb") as fh:
                outcome = pickle.load(fh)
            return "COMPLETED" if outcome[0] == "success" else "FAILED"
        except Exception:
            return "ENDED"
    return "ENDED"


def _elapsed(start_iso: str) -> str:
    try:
        start = datetime.fromisoformat(start_iso)
    except ValueError:
        return ""
    seconds = int((datetime.now(timezone.utc) - start).total_seconds())
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def local_rows(max_age_s: float = 2 * 86400) -> list[JobRow]:
    rows = []
    now = datetime.now(timezone.utc)
    for record in registry.load():
        if record.executor != "local" or record.kind == "finalize":
            continue
        try:
            age = (now - datetime.fromisoformat(record.submitted)).total_seconds()
        except ValueError:
            continue
        if age > max_age_s:
            continue
        state = local_state(record)
        run = record.runs[0] if record.kind in ("run", "element") and record.runs else record.name
        if record.kind == "sweep":
            run = f"(driver of {len(record.runs)} runs)"
        rows.append(
            JobRow(
                record.job_id,
                "",
                record.kind,
                record.name,
                run,
                state,
                _elapsed(record.submitted) if state == "RUNNING" else "",
                "localhost",
                "local",
            )
        )
    return rows


def list_jobs(since: str = "now-2days") -> tuple[list[JobRow], list[str]]:
    """(rows, notes): Slurm jobs when Slurm is reachable, plus local jobs."""
    notes: list[str] = []
    rows: list[JobRow] = []
    if _slurm_present():
        try:
            rows += slurm_rows(since)
        except LaunchError as exc:
            notes.append(f"Slurm not reachable: {exc}")
    else:
        notes.append("Slurm is not installed here: showing local jobs only")
    rows += local_rows()
    return rows, notes


# ----------------------------------------------------------------------------- state


def job_state(job_id: str) -> str:
    """Current state of one job or array element ('' when Slurm does not know it)."""
    record = registry.by_job_id(job_id)
    if record is not None and record.executor == "local":
        return local_state(record, job_id)
    out = slurm_command(["squeue", "-h", "-j", job_id, "-o", "%T"]) if _queued(job_id) else ""
    if out.strip() and _state(out.splitlines()[0]) != "COMPLETING":
        return _state(out.splitlines()[0])
    # Ended (or ending: COMPLETING says nothing of how): accounting has the final state.
    return _accounting_state(job_id)


def _accounting_state(job_id: str) -> str:
    """The job's state in Slurm accounting ("" while it has no record yet)."""
    out = slurm_command(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"])
    states = [_state(s) for s in out.splitlines() if s.strip()]
    return states[-1] if states else ""


def _queued(job_id: str) -> bool:
    # squeue -j on an id Slurm has already forgotten is an error, not an empty answer.
    try:
        slurm_command(["squeue", "-h", "-j", job_id, "-o", "%i"])
    except LaunchError:
        return False
    return True


# ----------------------------------------------------------------------------- logs


@dataclass
class LogTarget:
    job_id: str
    folder: Path
    executor: str


def resolve_log_target(job: str) -> LogTarget:
    """JOB may be a job id, an array element (``12_3``) or a run name."""
    if not _JOB_ID.match(job):
        for record in reversed(registry.load()):
            if record.kind in ("run", "element") and record.name == job:
                return LogTarget(record.job_id, Path(record.folder), record.executor)
            if record.kind == "sweep" and job in record.runs and record.executor == "slurm":
                index = record.runs.index(job)
                return LogTarget(f"{record.job_id}_{index}", Path(record.folder), "slurm")
        raise LaunchError(f"no job or run named '{job}' in {registry.registry_path()}")
    record = registry.by_job_id(job)
    index = _split_id(job)[1]
    if record is not None:
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


# ----------------------------------------------------------------------------- cancel


@dataclass
class Cancelled:
    job_ids: list[str]
    description: str


def _cancel_local(job_id: str) -> None:
    if _local_alive(job_id):
        # What submitit's LocalJob.cancel sends: the controller stops its tasks on SIGINT.
        os.kill(int(job_id), signal.SIGINT)


def _records_for(target: str) -> list[registry.JobRecord]:
    if _JOB_ID.match(target):
        record = registry.by_job_id(target)
        return [record] if record is not None else []
    records = registry.by_name(target)
    # The newest submission under that name (a sweep and its finalizer share the name).
    newest = [r for r in records if r.kind in ("run", "sweep")][:1]
    if newest and newest[0].kind == "sweep":
        finals = [
            r
            for r in records
            if r.kind == "finalize" and r.parent_run_id == newest[0].parent_run_id
        ]
        newest += finals[:1]
    return newest


def cancel(target: str) -> Cancelled:
    """Cancel a job id, an array element, a run name or a sweep name (its array and finalizer).

    A cancelled sweep's parent run is closed as KILLED at once instead of waiting for the
    finalizer, which is cancelled too.
    """
    records = _records_for(target)
    if not records:
        if not _JOB_ID.match(target):
            # Maybe submitted from another machine: Slurm knows the job name.
            for kind in ("run", "sweep"):
                from glamhpc.launch.resources import job_name

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
    ids: list[str] = []
    main = records[0]
    job_id = target if _JOB_ID.match(target) else main.job_id
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
    out = slurm_command(["squeue", "-h", "-j", job_id, "-o", "%j"]) if _queued(job_id) else ""
    names = [line.strip() for line in out.splitlines() if line.strip()]
    if not names:
        raise LaunchError(f"job {job_id} is not queued or running")
    if parse_job_name(names[0]) is None:
        raise LaunchError(f"job {job_id} ({names[0]}) was not submitted by glamhpc: not cancelled")


def iter_table(rows: list[JobRow]) -> Iterator[tuple[str, ...]]:
    for row in rows:
        yield (
            row.job_id,
            row.array_index or "-",
            row.run,
            row.state,
            row.elapsed or "-",
            row.nodelist or "-",
        )
