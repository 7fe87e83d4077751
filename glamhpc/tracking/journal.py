"""The local journal: everything a run sends to MLflow, appended to a file in the run directory.

The journal is the single source of truth for delivery. The training thread appends one JSON line
per call (``log_metrics``, ``set_tags``, ``log_artifact``, ``finish``) and returns; the sender
thread (and ``glamhpc sync``) reads the file from the last *acknowledged* byte offset and delivers
the records in order. Delivery state lives in a small JSON file written atomically, so a crash at
any point leaves either the old or the new acknowledgement and at worst re-sends a batch, which
the sender's dedupe makes harmless (see ``sender.py``).

Record kinds (short keys keep the journal small and the training thread's ``json.dumps`` cheap):

================================  =============================================================
``{"s": step, "t": ms, "m": {}}``  metrics (key -> value) at one step, timestamp in ms
``{"tags": {k: v}}``               tags to set
``{"artifact": path, "dest": p}``  file or folder to upload (``dest``: artifact sub-path or null)
``{"status": S, "t": ms}``         run status change (RUNNING on resume, terminal on finish)
================================  =============================================================
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glamhpc.fsutil import atomic_write_json

log = logging.getLogger("glamhpc.tracking")

JOURNAL = Path("logs") / "metrics.jsonl"
"""Journal path, relative to the run directory."""
ACKS = Path("logs") / "metrics.acked.json"
"""Delivery state (acknowledged offset, delivered max step per key), relative to the run dir."""
REJECTED = Path("logs") / "metrics.rejected.jsonl"
"""Records the server refused as invalid (kept locally, never silently dropped)."""
PENDING_RUN = Path("logs") / "mlflow_pending_run.json"
"""Run to create when the server becomes reachable (offline start), relative to the run dir."""
STATE = Path("logs") / "tracking.json"
"""Where this run dir is tracked (URI, experiment, run uid, resume count)."""
RUN_ID_FILE = "mlflow_run_id"
"""The MLflow run id of the run directory (contract: run_dir/mlflow_run_id)."""


@dataclass
class AckState:
    """What has reached the server: everything before ``offset`` and, per metric key, the
    highest step delivered (the dedupe state that survives restarts)."""

    offset: int = 0
    delivered_max: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> AckState:
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls(
                offset=int(data.get("offset", 0)),
                delivered_max={str(k): int(v) for k, v in data.get("delivered_max", {}).items()},
            )
        except (ValueError, TypeError, AttributeError):
            # A corrupt ack file can only make us re-send: the sender's dedupe absorbs it.
            log.warning("ignoring unreadable tracking ack file %s; pending records re-sent", path)
            return cls()

    def save(self, path: Path) -> None:
        atomic_write_json(path, {"offset": self.offset, "delivered_max": self.delivered_max})


class Journal:
    """Append-only JSON-lines writer; thread-safe; each call is one ``write`` + ``flush``.

    Appends are flushed to the OS on every call (a killed process loses nothing); fsync, which can
    cost milliseconds on network filesystems, is left to the sender thread (``sync_to_disk``),
    which always fsyncs before it records an acknowledgement.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(path)
        self._fh = open(path, "ab")  # noqa: SIM115 (kept open for the run's lifetime)
        self._end = self._fh.tell()
        self._lock = threading.Lock()

    @property
    def end(self) -> int:
        """Byte offset just after the last complete record."""
        return self._end

    def append(self, record: dict[str, Any]) -> int:
        """Append one record; returns the offset just after it."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            self._end += len(line)
            return self._end

    def sync_to_disk(self) -> None:
        # fsync on a duplicate of the descriptor, outside the append lock: an fsync takes
        # milliseconds (more on a loaded node or a network filesystem) and the training thread's
        # next append must not wait for it (issue 17: it was most of log_metrics' p99). Every
        # append is already written to the OS, so syncing the file syncs all of them; the
        # duplicate stays valid even if close() runs meanwhile.
        with self._lock:
            if self._fh.closed:
                return
            fd = os.dup(self._fh.fileno())
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()


def repair_tail(path: Path) -> None:
    """Cut a half-written last line (a crash mid-append) so appends start on a fresh line."""
    if not path.is_file():
        return
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        # Scan back in blocks for the last newline; everything after it is the torn record.
        pos = size
        keep = 0
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            block = fh.read(pos - start)
            idx = block.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    log.warning(
        "tracking journal %s: dropped a half-written last line (%d bytes)", path, size - keep
    )


STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
_warned_bad: set[tuple[str, int]] = set()
_warned_lock = threading.Lock()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_problem(record: Any) -> str | None:
    """Why ``record`` is not a journal record glamhpc wrote (None when it is one).

    The journal is a file anyone with access to the run directory can edit: every reader checks
    a record's shape here before using it, so a planted or damaged line is skipped instead of
    raising in the middle of a resume.
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    if "m" in record:
        metrics = record["m"]
        if not isinstance(record.get("s"), int) or isinstance(record.get("s"), bool):
            return 'a metrics record without an integer step "s"'
        if not isinstance(record.get("t"), int) or isinstance(record.get("t"), bool):
            return 'a metrics record without an integer timestamp "t"'
        if not isinstance(metrics, dict) or not all(
            isinstance(k, str) and _number(v) for k, v in metrics.items()
        ):
            return '"m" is not an object of metric name -> number'
        return None
    if "tags" in record:
        tags = record["tags"]
        if not isinstance(tags, dict) or not all(isinstance(k, str) for k in tags):
            return '"tags" is not an object'
        return None
    if "artifact" in record:
        if not isinstance(record["artifact"], str) or not isinstance(
            record.get("dest"), (str, type(None))
        ):
            return '"artifact" is not a path string (or "dest" not a string)'
        return None
    if "status" in record:
        if record["status"] not in STATUSES:
            return f'"status" is not one of {", ".join(STATUSES)}'
        if not isinstance(record.get("t"), (int, type(None))):
            return '"t" is not an integer'
        return None
    return "no known record kind (m, tags, artifact, status)"


def outside_run_dir(run_dir: Path, path: Path) -> Path | None:
    """The first file or folder of ``path`` (itself, or anything under it) that resolves outside
    ``run_dir``; None when the whole upload stays inside.

    Artifact records are replayed from a file in the run directory, so they are only trusted to
    name things inside it: symlinks are resolved (a link to ~/.ssh in a model folder is caught),
    and ``..`` cannot climb out because the resolved path is compared.
    """
    root = run_dir.resolve()
    if not path.resolve().is_relative_to(root):
        return path
    if path.is_dir():
        for folder, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                entry = Path(folder) / name
                if not entry.resolve().is_relative_to(root):
                    return entry
    return None


def _line_number(path: Path, start: int) -> int:
    """1-based line of the record that starts at byte ``start`` (only computed for bad lines)."""
    count = 1
    with open(path, "rb") as fh:
        left = start
        while left > 0:
            block = fh.read(min(left, 1 << 20))
            if not block:
                break
            count += block.count(b"\n")
            left -= len(block)
    return count


def _skip_warning(path: Path, start: int, why: str) -> None:
    # Every reader (the resume's dedupe scan, the sender, sync, the learning curve) meets the
    # same bad line: one warning per line and process, not one per reader.
    key = (str(path), start)
    with _warned_lock:
        if key in _warned_bad:
            return
        _warned_bad.add(key)
    log.warning(
        "tracking journal %s:%d: %s; record skipped (fix or delete the line to keep it)",
        path,
        _line_number(path, start),
        why,
    )


def read_records(
    path: Path, start: int, max_bytes: int = 4 << 20
) -> list[tuple[int, dict[str, Any]]]:
    """Complete records after byte ``start``: [(offset just after the record, record)].

    Stops at the last newline so a line the writer is still appending is left for next time.
    Unparseable or malformed lines (``record_problem``) are reported once, naming the file and
    line, and returned as ``{}`` so that the caller still advances past them: skipping is the
    one consistent rule, because a bad line must not block the delivery of everything after it
    or the resume of the run.
    """
    if not path.is_file():
        return []
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(max_bytes)
    cut = data.rfind(b"\n")
    if cut < 0:
        if len(data) >= max_bytes:  # a single record larger than max_bytes: read it whole
            return read_records(path, start, max_bytes * 4)
        return []
    out: list[tuple[int, dict[str, Any]]] = []
    offset = start
    for raw in data[: cut + 1].split(b"\n")[:-1]:
        line_start = offset
        offset += len(raw) + 1
        try:
            record = json.loads(raw)
            why = record_problem(record)
        except ValueError:
            why = "not valid JSON"
        if why is not None:
            _skip_warning(path, line_start, why)
            record = {}
        out.append((offset, record))
    return out


def iter_records(path: Path, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """All complete records from ``start`` to the current end of the file."""
    offset = start
    while True:
        chunk = read_records(path, offset)
        if not chunk:
            return
        yield from chunk
        offset = chunk[-1][0]


def points_after(path: Path, start: int) -> int:
    """Metric values journaled after byte ``start`` (what "N points pending" counts)."""
    return sum(len(r.get("m") or ()) for _, r in iter_records(path, start))


def metric_series(path: Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric from the journal: local plots need no server round trip."""
    steps: list[int] = []
    values: list[float] = []
    for _, record in iter_records(path):
        metrics = record.get("m")
        if metrics and key in metrics:
            steps.append(int(record["s"]))
            values.append(float(metrics[key]))
    return steps, values


class MetricGate:
    """The dedupe rule at the door of the journal: a (key, step) enters at most once.

    ``logged_max`` maps each key to the highest step already journaled or delivered (restored at
    start from the ack file, the undelivered journal tail and, when reachable, the server). A
    metric at or below it is dropped: after a restart from a checkpoint a deterministic trainer
    recomputes steps that MLflow already has, and those must not appear twice. Consequence for
    callers: log each key at most once per step (a second value at the same step is dropped).
    """

    def __init__(self, journal: Journal, logged_max: dict[str, int]) -> None:
        self._journal = journal
        self._max = logged_max
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}  # raw key -> key as sent (validated once per key)
        self._warned: set[str] = set()
        self.last_step = max(logged_max.values(), default=0)
        self._closed = False

    def close(self) -> None:
        """Drop every later metric (the run's final status is about to be journaled)."""
        with self._lock:
            self._closed = True

    def _key(self, raw: str) -> str:
        key = self._keys.get(raw)
        if key is None:
            from glamhpc.tracking.runs import safe_key, valid_metric_key

            key = raw if valid_metric_key(raw) else safe_key(raw)
            if key != raw:
                log.warning("metric name %r is not valid in MLflow; logged as %r", raw, key)
            self._keys[raw] = key
        return key

    def log(self, metrics: Mapping[str, Any], step: int, timestamp_ms: int) -> int | None:
        """Journal the metrics not yet logged at ``step``; returns the journal offset or None."""
        step = int(step)
        fresh: dict[str, float] = {}
        with self._lock:
            if self._closed:
                return None
            for raw, value in metrics.items():
                key = self._key(raw)
                seen = self._max.get(key)
                if seen is not None and step <= seen:
                    continue
                try:
                    fresh[key] = float(value)
                except (TypeError, ValueError):
                    if raw not in self._warned:
                        self._warned.add(raw)
                        log.warning("metric %r has a non-numeric value %r; not logged", raw, value)
            if not fresh:
                return None
            for key in fresh:
                self._max[key] = step
            if step > self.last_step:
                self.last_step = step
            return self._journal.append({"s": step, "t": timestamp_ms, "m": fresh})


def journaled_max(path: Path, start: int) -> dict[str, int]:
    """Highest step per key in the journal after byte ``start`` (the undelivered tail)."""
    out: dict[str, int] = {}
    for _, record in iter_records(path, start):
        metrics = record.get("m")
        if metrics:
            step = int(record["s"])
            for key in metrics:
                if key not in out or step > out[key]:
                    out[key] = step
    return out


def reject_metrics(path: Path, metrics: list[Any], reason: str) -> None:
    """Keep metrics the server refused as invalid in ``path`` (never silently dropped)."""
    with open(path, "a", encoding="utf-8") as fh:
        for m in metrics:
            row = {"k": m.key, "v": m.value, "s": m.step, "t": m.timestamp, "why": reason}
            fh.write(json.dumps(row) + "\n")
    log.warning("MLflow refused %d metrics (%s); kept in %s", len(metrics), reason, path.as_posix())
