"""``Tracker``: rank 0's handle on its MLflow run (create or resume, log cheaply, finish).

Cost model: every logging call on the training thread only appends one JSON line to the journal
(``logs/metrics.jsonl``) and returns; a background sender delivers it (see ``sender.py``). So the
training thread never waits for the network, an outage costs nothing but a warning, and a crash
loses nothing that was logged.

Start-up policy (documented in docs/TRACKING.md): an unreachable tracking store at START is an
error (one line, naming the URI and the fixes) unless ``tracking.offline_ok`` is true, in which
case the run is created later by the sender or by ``glamhpc sync``. Starting a long job whose
metrics silently go nowhere is the mistake this prevents; compute nodes without network access to
the server are the case ``offline_ok`` exists for. Outages AFTER start never stop training.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from glamhpc.fsutil import atomic_write_text
from glamhpc.tracking.journal import (
    ACKS,
    JOURNAL,
    PENDING_RUN,
    RUN_ID_FILE,
    STATE,
    AckState,
    Journal,
    MetricGate,
    journaled_max,
    metric_series,
)
from glamhpc.tracking.runs import (
    JOB_STATE_TAG,
    TERMINAL_STATUSES,
    RunSpec,
    build_spec,
    clean_tags,
    create_run,
    environment_tags,
)
from glamhpc.tracking.sender import Sender, server_max_steps
from glamhpc.tracking.system import SystemSampler
from glamhpc.tracking.uri import (
    TrackingError,
    apply_http_defaults,
    client,
    probe,
    resolve_uri,
    short_error,
)

log = logging.getLogger("glamhpc.tracking")

_JOB_STATE = {"FINISHED": "COMPLETED", "FAILED": "FAILED", "KILLED": "KILLED"}

DEFAULTS: dict[str, Any] = {
    "offline_ok": False,
    "system_metrics": False,
    "system_metrics_interval_s": 10.0,
    "retry_max_s": 30.0,
    "flush_timeout_s": 60.0,
}
"""Tracker options; each can come from the config's ``tracking`` section or a keyword."""


class RunDirLock:
    """One tracker (or `glamhpc sync`) per run directory: ``flock`` on logs/tracking.lock.

    Two senders on one journal would race on the ack file. The kernel drops the lock when the
    holder dies, so a crashed job never blocks its requeued successor. Filesystems without
    ``flock`` (some NFS setups) are tolerated: the lock is then advisory only.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "logs" / "tracking.lock"
        self._fh: Any = None

    def acquire(self) -> RunDirLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise TrackingError(
                f"{self.path.parent.parent} is being tracked by another process ({holder}); "
                f"it delivers its own journal, wait for it to end"
            ) from None
        except OSError:
            pass  # no flock on this filesystem
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def read_run_id(run_dir: Path) -> str | None:
    path = run_dir / RUN_ID_FILE
    if path.is_file():
        text = path.read_text().strip()
        return text or None
    return None


def _options(config: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    section = config.get("tracking") if isinstance(config, Mapping) else None
    section = section if isinstance(section, Mapping) else {}
    out = dict(DEFAULTS)
    for key in DEFAULTS:
        if section.get(key) is not None:
            out[key] = section[key]
        if given.get(key) is not None:
            out[key] = given[key]
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


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
        (``offline_ok``, ``system_metrics``, ...), else from ``DEFAULTS``. Undelivered records
        of an earlier start are replayed first, in order. Raises ``TrackingError`` (one line)
        when the store is unusable at start and ``offline_ok`` is false.
        """
        given = {
            "offline_ok": offline_ok,
            "system_metrics": system_metrics,
            "system_metrics_interval_s": system_metrics_interval_s,
            "retry_max_s": retry_max_s,
            "flush_timeout_s": flush_timeout_s,
        }
        opts = _options(config, given)
        root = Path(run_dir).resolve()
        (root / "logs").mkdir(parents=True, exist_ok=True)
        resolved = resolve_uri(uri)
        apply_http_defaults()
        _close_abandoned(root)
        lock = RunDirLock(root).acquire()
        try:
            tracker = cls._start_locked(
                root, dict(config), experiment, resolved, run_name, tags or {}, parent_run_id,
                opts, lock,
            )  # fmt: skip
        except BaseException:
            lock.release()
            raise
        with _ACTIVE_LOCK:
            _ACTIVE[root] = tracker
        return tracker

    @classmethod
    def _start_locked(
        cls,
        root: Path,
        config: dict[str, Any],
        experiment: str,
        uri: str,
        run_name: str | None,
        tags: Mapping[str, Any],
        parent_run_id: str | None,
        opts: dict[str, Any],
        lock: RunDirLock,
    ) -> Tracker:
        state = _read_json(root / STATE)
        run_uid = str(state.get("run_uid") or uuid.uuid4().hex)
        run_id = read_run_id(root)
        pending = root / PENDING_RUN
        online = True
        try:
            probe(uri)
        except TrackingError as exc:
            if not opts["offline_ok"]:
                raise
            online = False
            log.warning("%s; starting OFFLINE (tracking.offline_ok)", exc)
        mlflow_client = client(uri)
        server_max: dict[str, int] = {}
        earlier_offline = run_id is None and pending.is_file()
        # Continuing: an MLflow run exists, or an earlier offline start left its spec; either way
        # its params come from that first start and its journal may end with a terminal status.
        resumed = run_id is not None or earlier_offline
        if run_id is None:
            if earlier_offline:
                spec = RunSpec.from_json(pending.read_text())
            else:
                spec = build_spec(
                    config, experiment, run_name or root.name, tags, parent_run_id, run_uid
                )
                atomic_write_text(pending, spec.to_json())
            if online:
                try:
                    run_id = create_run(mlflow_client, spec, uri)
                except TrackingError:
                    if not earlier_offline:  # never drop the spec an offline start left
                        pending.unlink(missing_ok=True)
                    raise
                except Exception as exc:
                    if not opts["offline_ok"]:
                        if not earlier_offline:
                            pending.unlink(missing_ok=True)
                        raise TrackingError(
                            f"could not create the MLflow run at {uri}: {short_error(exc)}"
                        ) from None
                    online = False
                    log.warning("could not create the MLflow run at %s (%s); OFFLINE", uri, exc)
                else:
                    atomic_write_text(root / RUN_ID_FILE, run_id + "\n")
                    pending.unlink(missing_ok=True)
        elif online:
            server_max = cls._check_existing(mlflow_client, run_id, root, uri, state, opts)
        acks = AckState.load(root / ACKS)
        logged_max = dict(acks.delivered_max)
        for source in (journaled_max(root / JOURNAL, acks.offset), server_max):
            for key, step in source.items():
                if key not in logged_max or step > logged_max[key]:
                    logged_max[key] = step
        journal = Journal(root / JOURNAL)
        gate = MetricGate(journal, logged_max)
        starts = int(state.get("starts", 0)) + 1
        if resumed:
            # Through the journal, so that a terminal status left undelivered by the previous
            # start is applied first and RUNNING last.
            journal.append(
                {
                    "tags": {
                        **environment_tags(),
                        **clean_tags(tags),
                        JOB_STATE_TAG: "RUNNING",
                        "glamhpc.starts": str(starts),
                    }
                }
            )
            journal.append({"status": "RUNNING", "t": _now_ms()})
        state.update(
            uri=uri,
            experiment=experiment,
            run_uid=run_uid,
            run_name=run_name or root.name,
            starts=starts,
        )
        atomic_write_text(root / STATE, json.dumps(state, indent=1, sort_keys=True))
        sampler = (
            SystemSampler(float(opts["system_metrics_interval_s"]))
            if opts["system_metrics"]
            else None
        )
        sender = Sender(
            root,
            uri,
            run_id,
            acks,
            retry_max_s=float(opts["retry_max_s"]),
            journal=journal,
            gate=gate,
            sampler=sampler,
        )
        sender.start()
        return cls(root, uri, journal, gate, sender, lock, float(opts["flush_timeout_s"]), resumed)

    @staticmethod
    def _check_existing(
        mlflow_client: Any,
        run_id: str,
        root: Path,
        uri: str,
        state: Mapping[str, Any],
        opts: Mapping[str, Any],
    ) -> dict[str, int]:
        from mlflow.exceptions import MlflowException

        try:
            return server_max_steps(mlflow_client, run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                where = state.get("uri")
                hint = f" (it was tracked at {where})" if where and where != uri else ""
                raise TrackingError(
                    f"MLflow run {run_id} from {root / RUN_ID_FILE} does not exist at {uri}"
                    f"{hint}; use the original tracking URI, or delete {root / RUN_ID_FILE} to "
                    f"start a new MLflow run"
                ) from None
            if not opts["offline_ok"]:
                raise TrackingError(
                    f"cannot read MLflow run {run_id} at {uri}: {short_error(exc)}"
                ) from None
        except Exception as exc:
            if not opts["offline_ok"]:
                raise TrackingError(
                    f"cannot read MLflow run {run_id} at {uri}: {short_error(exc)}"
                ) from None
        return {}

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
        self._gate.log(metrics, step, _now_ms())
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

        Do not modify or delete the file before ``flush``/``finish`` returns.
        """
        self._check_open()
        self._journal.append({"artifact": str(Path(path).resolve()), "dest": artifact_path})

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Upload a folder's content in the background (see ``log_artifact``)."""
        self.log_artifact(local_dir, artifact_path)

    def log_learning_curve(
        self,
        metric: str = "success_rate",
        artifact_path: str | None = None,
        filename: str | None = None,
    ) -> Path | None:
        """Render ``metric`` vs frames from the local journal to a PNG and log it.

        Needs no server round trip, so it works offline too. Returns the PNG path (in
        run_dir/logs), or None when the metric was never logged.
        """
        from glamhpc.report import plot_curves

        steps, values = metric_series(self.journal_path, metric)
        if not steps:
            log.warning("no '%s' in %s; learning curve not drawn", metric, self.journal_path)
            return None
        name = filename or f"learning_curve_{metric.replace('/', '_')}.png"
        out = self.run_dir / "logs" / name
        plot_curves(
            {self.run_dir.name: [(steps, values)]},
            out,
            metric=metric,
            title=f"{self.run_dir.name}: {metric.replace('_', ' ')} vs frames",
            # Per-update success rates are noisy: a trailing mean over ~1/25 of the run.
            smooth=max(1, len(steps) // 25) if len(steps) > 50 else 1,
        )
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
        or by ``glamhpc sync RUN_DIR``. Calling it twice is harmless.
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
            target = self._journal.append({"status": status, "t": _now_ms()})
            done = self._sender.wait_delivered(target, self._timeout(timeout_s))
            self._sender.stop(timeout_s=5.0 if done else 1.0)
            if not done:
                log.warning(
                    "%d bytes of tracking records not delivered to %s (%s); they stay in %s and "
                    "are sent by the next start of this run or `glamhpc sync %s`",
                    self._sender.pending_bytes(),
                    self.uri,
                    self._sender.last_error or "timeout",
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


# ----------------------------------------------------------------------------- helpers


def register_run(
    run_dir: str | os.PathLike[str],
    config: Mapping[str, Any],
    experiment: str,
    uri: str | None,
    run_name: str | None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create the MLflow run of ``run_dir`` ahead of training (e.g. at `glamhpc submit`).

    The run gets its params, tags and config.yaml now, status SCHEDULED and job state PENDING;
    the job's ``Tracker.start`` then finds run_dir/mlflow_run_id and continues it. Returns the id
    (the existing one when the run directory already has a run).
    """
    root = Path(run_dir).resolve()
    existing = read_run_id(root)
    if existing:
        return existing
    resolved = resolve_uri(uri)
    apply_http_defaults()
    probe(resolved)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    state = _read_json(root / STATE)
    run_uid = str(state.get("run_uid") or uuid.uuid4().hex)
    spec = build_spec(
        dict(config), experiment, run_name or root.name, tags or {}, parent_run_id, run_uid
    )
    spec.tags[JOB_STATE_TAG] = "PENDING"
    try:
        run_id = create_run(client(resolved), spec, resolved, status="SCHEDULED")
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(
            f"could not create the MLflow run at {resolved}: {short_error(exc)}"
        ) from None
    atomic_write_text(root / RUN_ID_FILE, run_id + "\n")
    state.update(uri=resolved, experiment=experiment, run_uid=run_uid, run_name=spec.run_name)
    atomic_write_text(root / STATE, json.dumps(state, indent=1, sort_keys=True))
    return run_id


def sync_run_dir(
    run_dir: str | os.PathLike[str], uri: str | None = None, timeout_s: float = 300.0
) -> tuple[str | None, bool, int]:
    """Deliver what ``run_dir``'s journal still holds (`glamhpc sync`).

    The URI is ``uri`` if given, else the one recorded at start (logs/tracking.json), else the
    usual resolution. Creates the run first when the run was started offline. Returns
    (run id, everything delivered?, bytes still pending).
    """
    root = Path(run_dir).resolve()
    if not (root / JOURNAL).is_file() and not (root / PENDING_RUN).is_file():
        raise TrackingError(
            f"{root} has no tracking journal ({JOURNAL}); pass a run directory "
            f"(runs/<experiment>/<run-name>) of a run started with tracking enabled"
        )
    if read_run_id(root) is None and not (root / PENDING_RUN).is_file():
        raise TrackingError(
            f"{root} has a journal but neither {RUN_ID_FILE} nor {PENDING_RUN}: it cannot be "
            f"matched to an MLflow run"
        )
    state = _read_json(root / STATE)
    resolved = resolve_uri(uri or state.get("uri"))
    apply_http_defaults()
    probe(resolved)
    lock = RunDirLock(root).acquire()
    try:
        run_id = read_run_id(root)
        if run_id is not None:
            Tracker._check_existing(client(resolved), run_id, root, resolved, state, DEFAULTS)
        sender = Sender(root, resolved, run_id, AckState.load(root / ACKS), retry_max_s=5.0)
        done = sender.drain(timeout_s)
        if done and uri and state.get("uri") != resolved:
            state["uri"] = resolved
            atomic_write_text(root / STATE, json.dumps(state, indent=1, sort_keys=True))
        return sender.run_id, done, sender.pending_bytes()
    finally:
        lock.release()
