"""``Tracker``: rank 0's handle on its MLflow run (create or resume, log cheaply, finish).

Cost model: every logging call on the training thread only appends one JSON line to the journal
(``logs/metrics.jsonl``) and returns; a background sender delivers it (see ``sender.py``). So the
training thread never waits for the network, an outage costs nothing but a warning, and a crash
loses nothing that was logged. Creating or resuming the run is ``start.py``; the start-up policy
for an unreachable store is documented there.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from glamhpc.tracking import handover
from glamhpc.tracking.curves import draw_learning_curve
from glamhpc.tracking.journal import JOURNAL, Journal, MetricGate, outside_run_dir
from glamhpc.tracking.lock import RunDirLock
from glamhpc.tracking.runs import JOB_STATE_TAG, TERMINAL_STATUSES, clean_tags
from glamhpc.tracking.sender import Sender
from glamhpc.tracking.start import TrackerOptions, now_ms, open_run
from glamhpc.tracking.uri import apply_http_defaults, resolve_uri
from glamhpc.ui.plots import DEFAULT_METRIC

log = logging.getLogger("glamhpc.tracking")

_JOB_STATE = {"FINISHED": "COMPLETED", "FAILED": "FAILED", "KILLED": "KILLED"}

# Trackers of this process that are not finished yet, by run directory. A second start on the
# same directory in one process (a test, a notebook, a trainer retried after an exception) first
# closes the abandoned one instead of failing on the directory lock; at interpreter exit an
# unfinished tracker is closed as FAILED so that a crashed run does not stay RUNNING forever.
_ACTIVE: dict[Path, Tracker] = {}
_ACTIVE_LOCK = threading.Lock()
EXIT_FLUSH_S = 10.0
"""At interpreter exit, seconds an unfinished tracker still waits for delivery."""


def _close_abandoned(root: Path) -> None:
    with _ACTIVE_LOCK:
        old = _ACTIVE.pop(root, None)
    if old is not None and not old._finished:
        log.warning("closing the unfinished tracker of %s (started again in this process)", root)
        old.finish("FAILED", timeout_s=min(old.flush_timeout_s, EXIT_FLUSH_S))


@atexit.register
def _finish_all_at_exit() -> None:
    with _ACTIVE_LOCK:
        left = list(_ACTIVE.values())
        _ACTIVE.clear()
    for tracker in left:
        if not tracker._finished:
            tracker.finish("FAILED", timeout_s=min(tracker.flush_timeout_s, EXIT_FLUSH_S))


class Tracker:
    """Rank 0's MLflow run. Create with ``Tracker.start``; use as a context manager or call
    ``finish``. All logging methods are cheap and never raise because of the server."""

    def __init__(
        self,
        run_dir: Path,
        uri: str,
        journal: Journal,
        gate: MetricGate,
        sender: Sender,
        lock: RunDirLock,
        flush_timeout_s: float,
        resumed: bool,
    ) -> None:
        self.run_dir = run_dir
        self.uri = uri
        self.resumed = resumed
        """True when this start continued an existing MLflow run (params were not re-logged)."""
        self.flush_timeout_s = flush_timeout_s
        self._journal = journal
        self._gate = gate
        self._sender = sender
        self._lock = lock
        self._finished = False
        self.call_seconds = 0.0
        """Wall time the calling (training) thread spent inside ``log_metrics`` so far."""
        self.calls = 0
        """Number of ``log_metrics`` calls (benchmarks/tracking_overhead.py reads both)."""

    # ------------------------------------------------------------------ start
    @classmethod
    def start(
        cls,
        run_dir: str | os.PathLike[str],
        config: Mapping[str, Any],
        experiment: str,
        uri: str | None,
        run_name: str | None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        *,
        offline_ok: bool | None = None,
        system_metrics: bool | None = None,
        system_metrics_interval_s: float | None = None,
        retry_max_s: float | None = None,
        flush_timeout_s: float | None = None,
    ) -> Tracker:
        """Create the run of ``run_dir`` or resume it (run_dir/mlflow_run_id exists).

        ``config`` is the fully resolved config as a dict (``glamhpc.config.to_dict``): it is
        logged as flattened params and as ``config.yaml`` on creation, never again on resume
        (MLflow params are immutable). Options left as None come from ``config["tracking"]``
        (``offline_ok``, ``system_metrics``, ...), else from the ``TrackerOptions`` defaults.
        Undelivered records of an earlier start are replayed first, in order. Raises
        ``TrackingError`` (one line) when the store is unusable at start and ``offline_ok`` is
        false.
        """
        given: dict[str, bool | float | None] = {
            "offline_ok": offline_ok,
            "system_metrics": system_metrics,
            "system_metrics_interval_s": system_metrics_interval_s,
            "retry_max_s": retry_max_s,
            "flush_timeout_s": flush_timeout_s,
        }
        opts = TrackerOptions.resolve(config, given)
        root = Path(run_dir).resolve()
        (root / "logs").mkdir(parents=True, exist_ok=True)
        resolved = resolve_uri(uri)
        apply_http_defaults()
        _close_abandoned(root)
        lock = RunDirLock(root).acquire()
        try:
            opened = open_run(
                root, dict(config), experiment, resolved, run_name, tags or {}, parent_run_id, opts
            )
        except BaseException:
            lock.release()
            raise
        tracker = cls(
            root,
            resolved,
            opened.journal,
            opened.gate,
            opened.sender,
            lock,
            opts.flush_timeout_s,
            opened.resumed,
        )
        with _ACTIVE_LOCK:
            _ACTIVE[root] = tracker
        return tracker

    # ------------------------------------------------------------------ logging
    @property
    def run_id(self) -> str | None:
        """The MLflow run id (None while an offline start has not reached the server yet)."""
        return self._sender.run_id

    @property
    def journal_path(self) -> Path:
        return self.run_dir / JOURNAL

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Journal ``metrics`` at ``step`` (environment frames); microseconds, never blocks.

        A key already logged at this step or a later one is skipped (resume dedupe), so log each
        key at most once per step.
        """
        t0 = time.perf_counter()
        self._check_open()
        self._gate.log(metrics, step, now_ms())
        self.call_seconds += time.perf_counter() - t0
        self.calls += 1

    def log_metric(self, key: str, value: float, step: int) -> None:
        self.log_metrics({key: value}, step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._check_open()
        if tags:
            self._journal.append({"tags": clean_tags(tags)})

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload a file in the background (in order with the metrics; ``finish`` waits for it).

        The path must be inside the run directory (the journal that names it is replayed from
        that directory, so it is only trusted to name things there); ValueError otherwise. Do
        not modify or delete the file before ``flush``/``finish`` returns.
        """
        self._check_open()
        escaping = outside_run_dir(self.run_dir, Path(path))
        if escaping is not None:
            raise ValueError(
                f"log_artifact: {escaping} is not inside the run directory {self.run_dir}; "
                f"copy it there first (artifacts are uploaded only from inside the run directory)"
            )
        self._journal.append({"artifact": str(Path(path).resolve()), "dest": artifact_path})

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Upload a folder's content in the background (see ``log_artifact``)."""
        self.log_artifact(local_dir, artifact_path)

    def log_learning_curve(
        self,
        metric: str = DEFAULT_METRIC,
        artifact_path: str | None = None,
        filename: str | None = None,
    ) -> Path | None:
        """Render ``metric`` vs frames from the local journal to a PNG and log it.

        Needs no server round trip, so it works offline too. Returns the PNG path (in
        run_dir/logs), or None when the metric was never logged.
        """
        # Drawn at the end of a run: the sender delivers the tail meanwhile instead of waiting
        # out its pace (up to 15 s under load) until finish() wakes it.
        self._sender.wake()
        out = draw_learning_curve(self.run_dir, metric, filename)
        if out is not None:
            self.log_artifact(out, artifact_path)
        return out

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait (bounded) until everything logged so far reached MLflow; True when it did."""
        target = self._journal.end
        return self._sender.wait_delivered(target, self._timeout(timeout_s))

    def finish(self, status: str = "FINISHED", timeout_s: float | None = None) -> bool:
        """End the run: journal the status, wait (bounded) for delivery, stop the sender.

        ``status`` is FINISHED, FAILED or KILLED (KILLED for a preempted job that will be resumed:
        the next start sets it back to RUNNING). Returns True when everything was delivered;
        otherwise the rest stays journaled and is sent by the next start of this run directory
        or by ``glamhpc sync RUN_DIR``, and the run is handed over (``handover``) so that the next
        `glamhpc runs` / `report` / `sweep` or a sweep's finalizer completes the delivery.
        Calling it twice is harmless.
        """
        if status not in TERMINAL_STATUSES:
            raise ValueError(
                f"status must be one of {', '.join(TERMINAL_STATUSES)}, got {status!r}"
            )
        if self._finished:
            return True
        self._finished = True
        try:
            self._sender.stop_sampling()
            self._gate.close()  # a system sample in flight cannot land after the status
            self._journal.append({"tags": {JOB_STATE_TAG: _JOB_STATE[status]}})
            target = self._journal.append({"status": status, "t": now_ms()})
            done = self._sender.wait_delivered(target, self._timeout(timeout_s))
            self._sender.stop(timeout_s=5.0 if done else 1.0)
            if done:
                handover.clear(self.run_dir)
            else:
                reason = self._sender.last_error or "timeout"
                handover.hand_over_run(self.run_dir, self.uri, reason)
                log.warning(
                    "%d points (%d bytes) of tracking records not delivered to %s (%s); they stay "
                    "in %s and are delivered by the next `glamhpc runs`/`report`/`sweep`, the "
                    "next start of this run or `glamhpc sync %s`",
                    handover.pending_points(self.run_dir),
                    self._sender.pending_bytes(),
                    self.uri,
                    reason,
                    self.journal_path,
                    self.run_dir,
                )
            return done
        finally:
            self._journal.close()
            self._lock.release()
            with _ACTIVE_LOCK:
                if _ACTIVE.get(self.run_dir) is self:
                    del _ACTIVE[self.run_dir]

    def _timeout(self, timeout_s: float | None) -> float:
        return self.flush_timeout_s if timeout_s is None else float(timeout_s)

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"the tracker of {self.run_dir} is finished")

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("KILLED")
        else:
            self.finish("FAILED")
