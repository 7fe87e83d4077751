"""`glamhpc jobs`: this user's glamhpc jobs and their states, from Slurm and the registry.

Slurm is the source of truth for ids, states, elapsed times and node lists (squeue for what is
queued or running, sacct for what ended, so a finished or cancelled job stays visible); only
jobs whose name starts with ``glamhpc`` are shown. The registry adds what Slurm does not know:
which run an array element trains (or which evaluation part an array task plays). Local jobs
(processes on this machine) come from the registry alone. Reading logs is `glamhpc.launch.logs`,
cancelling `glamhpc.launch.cancel`; both ask this module for states.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from glamhpc.launch import registry
from glamhpc.launch.executors import LaunchError, slurm_command
from glamhpc.launch.job_result import read_result
from glamhpc.launch.resources import parse_job_name
from glamhpc.rl.progress import read_progress

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
#: A job id or an array element's (``123``, ``123_4``), as opposed to a run or sweep name.
JOB_ID = re.compile(r"^\d+(_\d+)?$")


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
    attempt: str = ""
    """Attempt number and last requeue reason ("2 (preempted)"), from glamhpc.launch.attempts."""
    progress: str = ""
    """The run's latest update, frames and success, from its logs/progress.json."""


def _slurm_present() -> bool:
    import shutil

    return shutil.which("squeue") is not None and shutil.which("sacct") is not None


def split_job_id(job_id: str) -> tuple[str, str]:
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
        split_job_id(job_id)[1],
        kind,
        short,
        _run_for(kind, short, job_id, records),
        _state(state),
        clock(elapsed),
        where,
        attempt=_attempt(job_id, records),
        progress=_progress(records.get(split_job_id(job_id)[0]), split_job_id(job_id)[1]),
    )


def _progress(record: registry.JobRecord | None, index: str) -> str:
    """Read from the run directory (no MLflow round trip); '' for jobs that train no run."""
    if record is None or record.kind not in ("run", "element", "sweep"):
        return ""
    position = int(index) if index.isdigit() else 0
    if position >= len(record.run_dirs) or (record.kind == "sweep" and not index):
        return ""
    found = read_progress(record.run_dirs[position])
    return found.cell() if found is not None else ""


def _attempt(job_id: str, records: dict[str, registry.JobRecord]) -> str:
    from glamhpc.launch.attempts import read_attempts

    record = records.get(split_job_id(job_id)[0])
    found = read_attempts(record.folder, job_id) if record is not None else None
    if found is None:
        return ""
    return f"{found.attempt} ({found.reason})" if found.reason else str(found.attempt)


def _run_for(kind: str, name: str, job_id: str, records: dict[str, registry.JobRecord]) -> str:
    if kind == "run":
        return name
    if kind == "finalize":
        return "(closes the parent run)"
    base, index = split_job_id(job_id)
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
    base, index = split_job_id(job_id)
    return (
        int(base) if base.isdigit() else 0,
        int(index) if index.isdigit() else -1,
        job_id,
    )


def local_alive(pid: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A recycled pid runs something else: only submitit's controller counts.
    return b"submitit" in cmdline


def local_state(record: registry.JobRecord, job_id: str | None = None) -> str:
    job_id = job_id or record.job_id
    if local_alive(job_id):
        return "RUNNING"
    # Our own JSON result only: submitit's ``*_result.pkl`` in the same folder is never
    # unpickled here (a planted pickle would run its code in the user's shell).
    result = read_result(Path(record.folder), job_id)
    return result.state if result is not None else "ENDED"


#: Slurm's time formats: [D-][HH:]MM:SS (squeue %M writes 0:05, sacct 00:00:05).
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


def clock(elapsed: str | int) -> str:
    """One elapsed-time format for every row: ``HH:MM:SS``, ``D-HH:MM:SS`` past a day. Takes
    seconds or any Slurm time; other text (UNLIMITED, '') is returned as it is."""
    if isinstance(elapsed, str):
        match = _SLURM_TIME.match(elapsed.strip())
        if match is None:
            return elapsed
        days, hours, minutes, secs = (int(g or 0) for g in match.groups())
        elapsed = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    days, rest = divmod(max(0, elapsed), 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _elapsed(start_iso: str) -> str:
    try:
        start = datetime.fromisoformat(start_iso)
    except ValueError:
        return ""
    return clock(int((datetime.now(timezone.utc) - start).total_seconds()))


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
                progress=_progress(record, ""),
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
    from glamhpc.tracking.handover import undelivered_notes  # runs whose jobs gave up waiting

    notes += undelivered_notes()
    return rows, notes


# ----------------------------------------------------------------------------- state


def job_state(job_id: str) -> str:
    """Current state of one job or array element ('' when Slurm does not know it)."""
    record = registry.by_job_id(job_id)
    if record is not None and record.executor == "local":
        return local_state(record, job_id)
    out = slurm_command(["squeue", "-h", "-j", job_id, "-o", "%T"]) if is_queued(job_id) else ""
    if out.strip() and _state(out.splitlines()[0]) != "COMPLETING":
        return _state(out.splitlines()[0])
    # Ended (or ending: COMPLETING says nothing of how): accounting has the final state.
    return _accounting_state(job_id)


def _accounting_state(job_id: str) -> str:
    """The job's state in Slurm accounting ("" while it has no record yet)."""
    out = slurm_command(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"])
    states = [_state(s) for s in out.splitlines() if s.strip()]
    return states[-1] if states else ""


def is_queued(job_id: str) -> bool:
    # squeue -j on an id Slurm has already forgotten is an error, not an empty answer.
    try:
        slurm_command(["squeue", "-h", "-j", job_id, "-o", "%i"])
    except LaunchError:
        return False
    return True


#: The job table's columns: (header, cell of a row). A new column is one entry here.
COLUMNS: tuple[tuple[str, Callable[[JobRow], str]], ...] = (
    ("job", lambda row: row.job_id),
    ("index", lambda row: row.array_index),
    ("run", lambda row: row.run),
    ("state", lambda row: row.state),
    ("elapsed", lambda row: row.elapsed),
    ("nodes", lambda row: row.nodelist),
    ("progress", lambda row: row.progress),
    ("attempt", lambda row: row.attempt),
)


def table_headers() -> tuple[str, ...]:
    return tuple(header for header, _ in COLUMNS)


def iter_table(rows: list[JobRow]) -> Iterator[tuple[str, ...]]:
    """The cells of each row, in COLUMNS order ('-' where there is nothing to show)."""
    for row in rows:
        yield tuple(cell(row) or "-" for _, cell in COLUMNS)
