"""Delivery of the journal to MLflow: in order, with backoff, exactly once per (key, step).

The same ``Sender`` runs in a background thread during training and synchronously in
``glamhpc sync``. It reads the journal from the acknowledged offset, turns consecutive metric
records into ``log_batch`` calls of at most 1000 metrics, applies tags / artifacts / status
records in between, and advances the acknowledged offset after each success.

Why no metric is sent twice, even when an acknowledgement is lost (the server committed a batch
but the reply, or the ack file write, never happened):

1. The journal stores each metric's original timestamp, and MLflow's SQL stores use
   (run, key, timestamp, step, value) as the metric primary key: re-sending an identical metric is
   a no-op on the server (``SqlAlchemyStore._log_metrics`` ignores the IntegrityError and inserts
   only the missing rows). ``tests/tracking/test_server.py`` checks this behaviour explicitly.
2. Because that is a property of the SQL store and not of the REST API, the sender also asks the
   server, after every failure and at start, for each key's latest (= highest) step
   (``get_run`` returns them in one call) and skips journal entries at or below it. This is exact
   because entries of one key are strictly increasing in the journal and delivered in order.

Behaviour under load (issue 17: 48 writers stalled a server whose pool they exhausted):

* at most one request in flight per run directory, process-wide (``_IN_FLIGHT``): a sender
  abandoned by ``finish`` while stuck on the network blocks a new one instead of doubling up;
* after a failure: exponential backoff with jitter (half fixed, half random), so a sweep's
  writers do not all come back in the same second after an outage;
* while healthy the pace adapts to the server: the next pass waits ``pace_factor`` x the last
  pass's request time (at most ``max_pace_s``) or until a full batch is journaled, so a slow
  server gets fewer, larger batches (up to 1000 metrics) instead of one update per request;
* batches respect MLflow's limits (1000 metrics, 100 params, 100 tags per ``log_batch``);
* messages say what is true: one warning per outage and cause (``diagnose``), "answers
  again; N points pending, delivering" when the server replies, "backlog delivered" only once
  everything journaled has been acknowledged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glamhpc.fsutil import atomic_write_text
from glamhpc.tracking.diagnose import Outage
from glamhpc.tracking.journal import (
    ACKS,
    JOURNAL,
    PENDING_RUN,
    REJECTED,
    RUN_ID_FILE,
    AckState,
    Journal,
    MetricGate,
    outside_run_dir,
    points_after,
    read_records,
    reject_metrics,
)
from glamhpc.tracking.runs import (
    MAX_METRICS_PER_BATCH,
    MlflowRunSpec,
    create_run,
    log_tags,
)
from glamhpc.tracking.system import SystemSampler
from glamhpc.tracking.uri import client, short_error

log = logging.getLogger("glamhpc.tracking")

# One lock per run directory in this process, held for the whole of a delivery pass: whatever
# happens to a sender (abandoned by finish() while a request hangs, a second tracker started on
# the same directory), a run never has two requests in flight. Other processes are kept out by
# the run directory's flock (lock.py).
_IN_FLIGHT: dict[Path, threading.Lock] = {}
_IN_FLIGHT_GUARD = threading.Lock()


def _in_flight_lock(run_dir: Path) -> threading.Lock:
    with _IN_FLIGHT_GUARD:
        return _IN_FLIGHT.setdefault(run_dir.resolve(), threading.Lock())


class _Stalled(Exception):
    """Delivery cannot progress now (server down, run missing): retry later, keep everything."""


def server_max_steps(mlflow_client: Any, run_id: str) -> dict[str, int]:
    """Highest step per metric key on the server (MLflow's latest-metrics table)."""
    run = mlflow_client.get_run(run_id)
    return {m.key: int(m.step) for m in run.to_proto().data.metrics}


class Sender:
    """Delivers ``run_dir``'s journal to ``uri``; see the module docstring for the guarantees."""

    poll_s = 0.5
    """Seconds between looks at the journal while the server is healthy."""
    ack_interval_s = 1.0
    """At most one ack-file write (with a journal fsync before it) per this many seconds."""
    fsync_interval_s = 5.0
    """During an outage the journal is still fsynced this often (nothing else would)."""
    artifact_attempts = 4
    """Uploads of one artifact tried this often while the server answers, then skipped."""
    pace_factor = 4.0
    """While healthy, wait at least this many times the last pass's request time between passes."""
    max_pace_s = 15.0
    """... but never longer than this, and never longer than it takes the journal to hold a full
    batch (``MAX_METRICS_PER_BATCH`` metrics): a slow server then gets one full batch per run
    and request instead of many small ones (its cost is mostly per request: a transaction, on
    SQLite a commit under the one write lock)."""

    def __init__(
        self,
        run_dir: Path,
        uri: str,
        run_id: str | None,
        state: AckState,
        *,
        retry_max_s: float = 30.0,
        journal: Journal | None = None,
        gate: MetricGate | None = None,
        sampler: SystemSampler | None = None,
        on_run_created: Callable[[str], None] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.uri = uri
        self.run_id = run_id
        self.state = state
        self._journal = journal
        self._gate = gate
        self._sampler = sampler
        self._on_run_created = on_run_created
        self._journal_path = run_dir / JOURNAL
        self._client = client(uri)
        self._server_max: dict[str, int] = {}
        self._reconcile = True  # always ask the server once before the first send
        self.outage = Outage(uri, self._journal_path, retry_max_s)
        self._pace_s = self.poll_s
        self._requests = 0
        self._pass_points = 0
        self._bytes_per_point = 50.0  # journal bytes per metric value, measured on every pass
        self._in_flight = _in_flight_lock(run_dir)
        self._last_ack_save = 0.0
        # stop() saves the ack while an abandoned thread may still be saving it: one at a time
        # (both would write the same temporary file; one rename would fail).
        self._ack_lock = threading.Lock()
        self._last_fsync = time.monotonic()
        self._ack_dirty = False
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered_records = 0
        self._artifact_failures = 0
        self.cpu_seconds = 0.0
        """CPU time of the sender thread so far (the upper bound of what it takes from training
        through the GIL; benchmarks/tracking_overhead.py reports it)."""

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="glamhpc-tracking", daemon=True)
        self._thread.start()

    def wake(self, force: bool = False) -> None:
        """Look at the journal now; ``force`` also skips the current backoff delay once."""
        if force:
            self.outage.next_try = 0.0
        self._wake.set()

    def wait_delivered(self, offset: int, timeout_s: float) -> bool:
        """Block until everything before ``offset`` is delivered, or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        self.wake(force=True)
        with self._cond:
            while self.state.offset < offset:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return self.state.offset >= offset
                self._cond.wait(min(left, 0.2))
        return True

    def stop_sampling(self) -> None:
        """No system metrics after this (called before the final status is journaled)."""
        self._sampler = None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after its current call (a call stuck on the network is abandoned)."""
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning(
                    "the tracking sender is still waiting on %s; leaving it (daemon thread)",
                    self.uri,
                )
        self._save_ack(force=True)

    def _loop(self) -> None:
        while not self._halt.is_set():
            now = time.monotonic()
            failing = self.outage.failures
            if failing:
                wait = max(0.0, self.outage.next_try - now)
                if wait > 0:
                    self._wake.wait(wait)
                    self._wake.clear()
            else:
                self._wait_for_batch(now + self._pace_s)
            if self._halt.is_set():
                break
            self._sample_system()
            if self.outage.failures and time.monotonic() < self.outage.next_try:
                self._fsync_now_and_then()
                continue
            self.attempt()
            self.cpu_seconds = time.thread_time()

    def _wait_for_batch(self, deadline: float) -> None:
        """Sleep until ``deadline``, a wake-up (flush, finish, stop) or a full batch journaled."""
        full = MAX_METRICS_PER_BATCH * self._bytes_per_point
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._wake.wait(min(left, self.poll_s)):
                self._wake.clear()
                return
            if self.pending_bytes() >= full:
                return

    def _sample_system(self) -> None:
        if self._sampler is None or self._gate is None or not self._sampler.due():
            return
        try:
            sample = self._sampler.sample()
        except Exception as exc:  # a sampler problem must not stop delivery
            log.warning("system metrics disabled: %s", short_error(exc))
            self._sampler = None
            return
        self._gate.log(sample, self._gate.last_step, int(time.time() * 1000))

    # ------------------------------------------------------------------ delivery
    def attempt(self) -> bool:
        """One pass: deliver everything journaled so far. False (and backoff) on failure."""
        if not self._in_flight.acquire(timeout=1.0):
            # Another sender of this run directory is still inside a request (one abandoned by
            # finish() while the server hung): never a second request in flight.
            self.outage.busy()
            return False
        t0 = time.monotonic()
        self._requests = 0
        self._pass_points = 0
        start_offset = self.state.offset
        try:
            self._deliver_all()
        except Exception as exc:
            self._failed(exc)
            return False
        finally:
            self._in_flight.release()
            with self._cond:
                self._cond.notify_all()
        if self._requests:
            spent = time.monotonic() - t0
            self._pace_s = min(self.max_pace_s, max(self.poll_s, self.pace_factor * spent))
        if self._pass_points >= 100:  # enough for a stable estimate of the record size
            self._bytes_per_point = (self.state.offset - start_offset) / self._pass_points
        self._succeeded()
        return True

    def drain(self, timeout_s: float) -> bool:
        """Synchronous delivery for `glamhpc sync`: retry with backoff until done or timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.attempt():
                self._save_ack(force=True)
                return True
            if self.outage.next_try > deadline:
                self._save_ack(force=True)
                return False
            time.sleep(max(0.0, self.outage.next_try - time.monotonic()))

    def pending_bytes(self) -> int:
        size = self._journal_path.stat().st_size if self._journal_path.is_file() else 0
        return max(0, size - self.state.offset)

    def _deliver_all(self) -> None:
        if self.run_id is None:
            self._create_pending_run()
        assert self.run_id is not None
        if self._reconcile:
            self._server_max = server_max_steps(self._client, self.run_id)
            self._reconcile = False
            self.outage.reachable(lambda: points_after(self._journal_path, self.state.offset))
        while True:
            records = read_records(self._journal_path, self.state.offset)
            if not records:
                break
            self._deliver(records)
            if self._halt.is_set() and self._thread is not None:
                # finish() already waited; stop() must not be held up by a long tail.
                break
        self._save_ack(force=False)

    def _deliver(self, records: list[tuple[int, dict[str, Any]]]) -> None:
        from mlflow.entities import Metric

        pending: list[tuple[Any, int | None]] = []
        tail_end = self.state.offset
        for end, record in records:
            metrics = record.get("m")
            if metrics is not None:
                step, ts = int(record["s"]), int(record["t"])
                fresh = [
                    (key, value)
                    for key, value in metrics.items()
                    if step
                    > max(self.state.delivered_max.get(key, -1), self._server_max.get(key, -1))
                ]
                for i, (key, value) in enumerate(fresh):
                    last = i == len(fresh) - 1
                    pending.append((Metric(key, float(value), ts, step), end if last else None))
                tail_end = end
                if len(pending) >= MAX_METRICS_PER_BATCH:
                    tail_end = self._send_metrics(pending, tail_end, keep_partial=True)
                continue
            tail_end = self._send_metrics(pending, tail_end)
            self._apply(record)
            self._advance(end)
            tail_end = end
        self._send_metrics(pending, tail_end)
        self._advance(tail_end)

    def _send_metrics(
        self, pending: list[tuple[Any, int | None]], tail_end: int, keep_partial: bool = False
    ) -> int:
        """Send ``pending`` in batches of <= 1000; ack the last complete record after each.

        With ``keep_partial`` only full batches are sent and the rest stays in ``pending``.
        Returns the offset up to which everything is covered once ``pending`` is empty.
        """
        while pending and (len(pending) >= MAX_METRICS_PER_BATCH or not keep_partial):
            chunk = pending[:MAX_METRICS_PER_BATCH]
            self._log_batch([m for m, _ in chunk])
            self._pass_points += len(chunk)
            del pending[:MAX_METRICS_PER_BATCH]
            for metric, _ in chunk:
                if metric.step > self.state.delivered_max.get(metric.key, -1):
                    self.state.delivered_max[metric.key] = metric.step
            ends = [end for _, end in chunk if end is not None]
            if not pending:
                self._advance(tail_end)
            elif ends:
                self._advance(ends[-1])
        return tail_end

    def _log_batch(self, metrics: list[Any]) -> None:
        from mlflow.exceptions import MlflowException

        self._requests += 1
        try:
            self._client.log_batch(self.run_id, metrics=metrics)
        except MlflowException as exc:
            if exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            if self._run_deleted():
                raise _Stalled(
                    f"run {self.run_id} was deleted in MLflow; restore it to resume delivery"
                ) from None
            # The server refuses this data itself (not the connection): retrying forever would
            # block every later metric, so the batch is set aside locally with the reason.
            reject_metrics(self.run_dir / REJECTED, metrics, short_error(exc))

    def _run_deleted(self) -> bool:
        try:
            return self._client.get_run(self.run_id).info.lifecycle_stage == "deleted"
        except Exception:
            return False

    def _apply(self, record: dict[str, Any]) -> None:
        assert self.run_id is not None  # only reached from _deliver_all, after the run exists
        self._requests += 1
        if "tags" in record:
            log_tags(self._client, self.run_id, record["tags"])
        elif "artifact" in record:
            self._upload(Path(record["artifact"]), record.get("dest"))
        elif "status" in record:
            status = str(record["status"])
            if status == "RUNNING":
                self._client.update_run(self.run_id, status="RUNNING")
            else:
                self._client.set_terminated(self.run_id, status=status, end_time=record.get("t"))
        # Unknown or corrupt ({}) records are skipped so they never block delivery.

    def _upload(self, path: Path, dest: str | None) -> None:
        if not path.exists():
            log.warning("artifact %s no longer exists; not uploaded", path)
            return
        escaping = outside_run_dir(self.run_dir, path)
        if escaping is not None:
            # The journal is a file in the run directory, editable by whoever can write there:
            # it may only name uploads inside that directory (issue 12).
            log.warning(
                "artifact record in %s names %s, which resolves outside the run directory %s; "
                "not uploaded",
                self._journal_path,
                escaping,
                self.run_dir,
            )
            return
        try:
            if path.is_dir():
                self._client.log_artifacts(self.run_id, str(path), dest)
            else:
                self._client.log_artifact(self.run_id, str(path), dest)
        except Exception as exc:
            # Each attempt starts with a get_run that succeeded, so the server is up: an upload
            # that keeps failing (permissions, quota, a file too large for a proxy) must not hold
            # back every metric behind it forever.
            self._artifact_failures += 1
            if self._artifact_failures < self.artifact_attempts:
                raise
            log.warning(
                "giving up on uploading %s after %d attempts: %s",
                path,
                self._artifact_failures,
                short_error(exc),
            )
        self._artifact_failures = 0

    def _advance(self, offset: int) -> None:
        if offset > self.state.offset:
            self.state.offset = offset
            self._ack_dirty = True
            self.delivered_records += 1
            with self._cond:
                self._cond.notify_all()

    def _save_ack(self, force: bool) -> None:
        with self._ack_lock:
            now = time.monotonic()
            if not self._ack_dirty or (
                not force and now - self._last_ack_save < self.ack_interval_s
            ):
                return
            # The ack must never point past what is durable in the journal (after a machine
            # crash a shorter journal with a longer ack would silently mark new appends as
            # delivered).
            self._fsync_journal()
            self.state.save(self.run_dir / ACKS)
            self._ack_dirty = False
            self._last_ack_save = now

    def _fsync_journal(self) -> None:
        if self._journal is not None:
            self._journal.sync_to_disk()
        elif self._journal_path.is_file():
            with open(self._journal_path, "rb") as fh:
                os.fsync(fh.fileno())
        self._last_fsync = time.monotonic()

    def _fsync_now_and_then(self) -> None:
        if time.monotonic() - self._last_fsync >= self.fsync_interval_s:
            self._fsync_journal()

    def _create_pending_run(self) -> None:
        path = self.run_dir / PENDING_RUN
        if not path.is_file():
            raise _Stalled(f"{self.run_dir} has neither {RUN_ID_FILE} nor {PENDING_RUN}")
        spec = MlflowRunSpec.from_json(path.read_text())
        run_id = create_run(self._client, spec, self.uri)
        atomic_write_text(self.run_dir / RUN_ID_FILE, run_id + "\n")
        path.unlink(missing_ok=True)
        self.run_id = run_id
        log.warning("created MLflow run %s at %s for %s", run_id, self.uri, self.run_dir)
        if self._on_run_created is not None:
            self._on_run_created(run_id)

    # ------------------------------------------------------------------ health
    @property
    def last_error(self) -> str | None:
        """The last failure, with its likely cause (None while healthy)."""
        return self.outage.last_error

    def _failed(self, exc: BaseException) -> None:
        self._reconcile = True
        self.outage.failed(exc)
        self._fsync_now_and_then()

    def _succeeded(self) -> None:
        self.outage.failures = 0
        if self.pending_bytes() == 0:
            self.outage.delivered(self.state.offset)
