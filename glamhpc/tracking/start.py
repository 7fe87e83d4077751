"""Starting a run directory's tracking: create its MLflow run, or resume it after a requeue.

Start-up policy (documented in docs/TRACKING.md): an unreachable tracking store at START is an
error (one line, naming the URI and the fixes) unless ``tracking.offline_ok`` is true, in which
case the run is created later by the sender or by ``glamhpc sync``. Starting a long job whose
metrics silently go nowhere is the mistake this prevents; compute nodes without network access to
the server are the case ``offline_ok`` exists for. Outages AFTER start never stop training.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glamhpc.fsutil import atomic_write_text
from glamhpc.secrets import redact_config, strip_credentials
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
)
from glamhpc.tracking.runs import (
    JOB_STATE_TAG,
    MlflowRunSpec,
    build_spec,
    clean_tags,
    create_run,
    environment_tags,
)
from glamhpc.tracking.sender import Sender, server_max_steps
from glamhpc.tracking.system import SystemSampler
from glamhpc.tracking.uri import TrackingError, client, probe, short_error

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("glamhpc.tracking")


@dataclass(frozen=True)
class TrackerOptions:
    """Tracker options; each can come from the config's ``tracking`` section or a keyword."""

    offline_ok: bool = False
    system_metrics: bool = False
    system_metrics_interval_s: float = 10.0
    retry_max_s: float = 30.0
    flush_timeout_s: float = 60.0

    @classmethod
    def resolve(
        cls, config: Mapping[str, Any], given: Mapping[str, bool | float | None]
    ) -> TrackerOptions:
        """Defaults < ``config["tracking"]`` < ``given`` (keywords); None means "not set"."""
        section = config.get("tracking") if isinstance(config, Mapping) else None
        section = section if isinstance(section, Mapping) else {}
        values: dict[str, Any] = {}  # bool or float, per field: cls(**values) checks each
        for f in fields(cls):
            for source in (section, given):
                value = source.get(f.name)
                if value is not None:
                    values[f.name] = float(value) if isinstance(f.default, float) else bool(value)
        return cls(**values)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file; {} when missing or unreadable (state files are best effort)."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def read_run_id(run_dir: Path) -> str | None:
    """The MLflow run id run_dir logs to (run_dir/mlflow_run_id), None before its creation."""
    path = run_dir / RUN_ID_FILE
    if path.is_file():
        text = path.read_text().strip()
        return text or None
    return None


def write_state(root: Path, state: Mapping[str, Any]) -> None:
    atomic_write_text(root / STATE, json.dumps(state, indent=1, sort_keys=True))


def now_ms() -> int:
    return int(time.time() * 1000)


def check_existing(
    mlflow_client: MlflowClient,
    run_id: str,
    root: Path,
    uri: str,
    state: Mapping[str, Any],
    offline_ok: bool,
) -> dict[str, int]:
    """The last step of each metric the existing run ``run_id`` has on the server.

    A run missing from the store is always an error (the URI changed, or the store was reset);
    other read failures are errors unless ``offline_ok`` (then {}: the journal is replayed and
    the sender reconciles with the server once it is back).
    """
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
        if not offline_ok:
            raise TrackingError(
                f"cannot read MLflow run {run_id} at {uri}: {short_error(exc)}"
            ) from None
    except Exception as exc:
        if not offline_ok:
            raise TrackingError(
                f"cannot read MLflow run {run_id} at {uri}: {short_error(exc)}"
            ) from None
    return {}


@dataclass
class OpenedRun:
    """What a started tracker writes to and who delivers it."""

    journal: Journal
    gate: MetricGate
    sender: Sender
    resumed: bool
    """True when this start continued an existing run (params were not re-logged)."""


def open_run(
    root: Path,
    config: dict[str, Any],
    experiment: str,
    uri: str,
    run_name: str | None,
    tags: Mapping[str, Any],
    parent_run_id: str | None,
    opts: TrackerOptions,
) -> OpenedRun:
    """Create or resume the run of ``root`` (the caller holds its lock) and start its sender.

    ``config`` becomes MLflow params, the config.yaml artifact and the pending-run file: it is
    redacted here (glamhpc.secrets), whoever the caller is; ``uri`` is stored without
    credentials (it is used as given to connect).
    """
    config = redact_config(config)
    state = read_json(root / STATE)
    run_uid = str(state.get("run_uid") or uuid.uuid4().hex)
    run_id = read_run_id(root)
    pending = root / PENDING_RUN
    online = True
    try:
        probe(uri)
    except TrackingError as exc:
        if not opts.offline_ok:
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
            spec = MlflowRunSpec.from_json(pending.read_text())
        else:
            spec = build_spec(
                config, experiment, run_name or root.name, tags, parent_run_id, run_uid
            )
            atomic_write_text(pending, spec.to_json())
        if online:
            run_id = _create(mlflow_client, spec, uri, root, earlier_offline, opts.offline_ok)
    elif online:
        server_max = check_existing(mlflow_client, run_id, root, uri, state, opts.offline_ok)
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
        journal.append({"status": "RUNNING", "t": now_ms()})
    else:
        # The first start's other tags went with the run's creation; its count goes here.
        journal.append({"tags": {"glamhpc.starts": str(starts)}})
    state.update(
        uri=strip_credentials(uri),
        experiment=experiment,
        run_uid=run_uid,
        run_name=run_name or root.name,
        starts=starts,
    )
    write_state(root, state)
    sampler = SystemSampler(opts.system_metrics_interval_s) if opts.system_metrics else None
    sender = Sender(
        root,
        uri,
        run_id,
        acks,
        retry_max_s=opts.retry_max_s,
        journal=journal,
        gate=gate,
        sampler=sampler,
    )
    sender.start()
    return OpenedRun(journal, gate, sender, resumed)


def _create(
    mlflow_client: MlflowClient,
    spec: MlflowRunSpec,
    uri: str,
    root: Path,
    earlier_offline: bool,
    offline_ok: bool,
) -> str | None:
    """Create the MLflow run of ``spec`` now; None when that failed and ``offline_ok`` lets the
    sender create it later from the pending spec."""
    pending = root / PENDING_RUN
    try:
        run_id = create_run(mlflow_client, spec, uri)
    except TrackingError:
        if not earlier_offline:  # never drop the spec an offline start left
            pending.unlink(missing_ok=True)
        raise
    except Exception as exc:
        if not offline_ok:
            if not earlier_offline:
                pending.unlink(missing_ok=True)
            raise TrackingError(
                f"could not create the MLflow run at {uri}: {short_error(exc)}"
            ) from None
        log.warning("could not create the MLflow run at %s (%s); OFFLINE", uri, exc)
        return None
    atomic_write_text(root / RUN_ID_FILE, run_id + "\n")
    pending.unlink(missing_ok=True)
    return run_id
