"""A per-user list of what glamhpc submitted: job id -> run names, folders, MLflow parent.

Slurm knows job ids, names and states; it does not know which run directory an array element
trains (or which evaluation part a task plays) or where submitit put its logs. `glamhpc jobs`,
`logs` and `cancel` join Slurm's view with this file. One JSON record per line, appended with a
single write (atomic for small records), so concurrent submits from several shells never
corrupt it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from glamhpc.fsutil import state_dir
from glamhpc.secrets import strip_credentials


def registry_path() -> Path:
    return state_dir() / "jobs.jsonl"


@dataclass
class JobRecord:
    """One submission: a single run, a sweep (array or local driver), a sweep finalizer, or an
    evaluation array (`glamhpc eval --executor slurm`)."""

    job_id: str
    kind: str
    """run | sweep | finalize | element (a local sweep's element job) | eval (its parts)."""
    name: str
    """Run name (kind run/element), sweep name, or the evaluated agent's label (eval)."""
    executor: str
    folder: str
    """submitit folder: pickles and one log per node task."""
    runs: list[str] = field(default_factory=list)
    """Run names by array index (one for a single run; an eval array's part names)."""
    run_dirs: list[str] = field(default_factory=list)
    experiment: str = ""
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    workdir: str = ""
    submitted: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> JobRecord:
        data: dict[str, Any] = json.loads(line)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def append(record: JobRecord) -> None:
    """Append ``record``; its tracking URI is stored without credentials, and the file (paths,
    run names, tracking servers of one user) is readable by its owner only."""
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if record.tracking_uri:
        record = replace(record, tracking_uri=strip_credentials(record.tracking_uri))
    data = (record.to_json() + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o600)  # a registry created by an older glamhpc was 0644
        os.write(fd, data)
    finally:
        os.close(fd)


def load() -> list[JobRecord]:
    """All records, oldest first; unreadable lines (a crash mid-write) are skipped."""
    path = registry_path()
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(JobRecord.from_json(line))
        except (ValueError, TypeError):
            continue
    return records


def by_job_id(job_id: str) -> JobRecord | None:
    """The record of a job id (``123`` or an array element ``123_4``), newest first."""
    base = job_id.split("_")[0]
    for record in reversed(load()):
        if record.job_id == base or record.job_id == job_id:
            return record
    return None


def by_name(name: str) -> list[JobRecord]:
    """Records of a sweep or run name (newest first), with its finalizer and local elements."""
    return [r for r in reversed(load()) if r.name == name]
