"""Runs whose journal is not delivered yet, handed over by the process that stopped waiting.

A job's exit path waits a bounded time (``tracking.flush_timeout_s``) for its journal to reach
the server: an overloaded or dead server must not hold an allocation. What is left is recorded
here, one small JSON file per run directory in the user's state folder (the home filesystem a
cluster shares between login and compute nodes), and the delivery is completed by the next
`glamhpc runs`, `report` or `sweep` (``deliver_handed_over``) or by a sweep's finalizer job.
A sweep parent whose children are still undelivered is handed over the same way and closed only
once they are in (issue 17: 80 % of a sweep's points were left in journals while its parent
said FINISHED).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from hashlib import sha1
from pathlib import Path

from glamhpc.fsutil import atomic_write_text, state_dir
from glamhpc.tracking.journal import ACKS, JOURNAL, AckState, points_after
from glamhpc.tracking.uri import TrackingError, probe, short_error

log = logging.getLogger("glamhpc.tracking")

DELIVERY_BUDGET_S = 20.0
"""Seconds `glamhpc runs` / `report` / `sweep` spend delivering handed-over journals."""


def handover_dir() -> Path:
    return state_dir() / "undelivered"


@dataclass
class Handover:
    """One run directory (``kind`` run) or sweep parent (``kind`` parent) left to deliver."""

    kind: str
    uri: str
    run_dir: str = ""
    points: int = 0
    reason: str = ""
    parent_run_id: str = ""
    status: str = ""
    """The parent's final status once every child is delivered."""
    run_dirs: list[str] = field(default_factory=list)
    since: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return self.parent_run_id if self.kind == "parent" else self.run_dir

    def path(self) -> Path:
        return handover_dir() / f"{self.kind}-{sha1(self.key.encode()).hexdigest()[:20]}.json"


def pending_points(run_dir: Path) -> int:
    """Metric values in ``run_dir``'s journal not acknowledged by the server yet."""
    journal = run_dir / JOURNAL
    if not journal.is_file():
        return 0
    offset = AckState.load(run_dir / ACKS).offset
    return points_after(journal, offset) if journal.stat().st_size > offset else 0


def pending_records(run_dir: Path) -> bool:
    """True when the journal holds anything (metrics, tags, status) not acknowledged yet."""
    journal = run_dir / JOURNAL
    return journal.is_file() and journal.stat().st_size > AckState.load(run_dir / ACKS).offset


def hand_over(entry: Handover) -> None:
    try:
        entry.path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(entry.path(), json.dumps(asdict(entry), sort_keys=True))
    except OSError as exc:  # an exit path must not fail on this; the journal is still there
        log.warning("could not record %s for later delivery: %s", entry.key, short_error(exc))


def hand_over_run(run_dir: Path, uri: str, reason: str) -> None:
    hand_over(Handover("run", uri, str(run_dir), pending_points(run_dir), reason))


def clear(run_dir: Path) -> None:
    """The run's journal is delivered: forget its hand-over (cheap when there is none)."""
    Handover("run", "", str(run_dir)).path().unlink(missing_ok=True)


def load_all() -> list[Handover]:
    folder = handover_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            out.append(
                Handover(**{k: v for k, v in data.items() if k in Handover.__dataclass_fields__})
            )
        except (OSError, ValueError, TypeError):
            log.warning("ignoring unreadable hand-over record %s", path)
    return out


def undelivered_runs() -> list[Handover]:
    """Handed-over runs whose journal still holds undelivered records (stale entries dropped)."""
    left = []
    for entry in load_all():
        if entry.kind != "run":
            continue
        root = Path(entry.run_dir)
        if not pending_records(root):
            entry.path().unlink(missing_ok=True)
            continue
        entry.points = pending_points(root)
        left.append(entry)
    return left


def deliver_runs(
    run_dirs: Iterable[Path], uri: str | None, budget_s: float
) -> tuple[list[Path], list[Path]]:
    """Sync every run directory that holds undelivered records, within ``budget_s`` in all.

    Returns (delivered, still undelivered). A run directory another process is tracking (its
    job is still running: it delivers its own journal) counts as undelivered. Stops early when
    a server is unreachable: every run of it would wait out the same probe.
    """
    from glamhpc.tracking.sync import sync_run_dir

    deadline = time.monotonic() + budget_s
    delivered: list[Path] = []
    left: list[Path] = []
    dead: set[str] = set()
    for root in run_dirs:
        if not pending_records(root):
            clear(root)
            delivered.append(root)
            continue
        target = uri or _recorded_uri(root)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (target is not None and target in dead):
            left.append(root)
            continue
        try:
            if target is not None:
                probe(target)
            _, done, _ = sync_run_dir(root, target, timeout_s=remaining)
        except TrackingError as exc:
            if target is not None and "cannot reach" in str(exc):
                dead.add(target)
            log.warning("%s not delivered now: %s", root, exc)
            done = False
        (delivered if done else left).append(root)
    return delivered, left


def _recorded_uri(run_dir: Path) -> str | None:
    try:
        data = json.loads((run_dir / "logs" / "tracking.json").read_text())
        return str(data["uri"]) if isinstance(data, dict) and data.get("uri") else None
    except (OSError, ValueError, KeyError):
        return None


def finalize_when_delivered(
    parent_run_id: str, uri: str | None, run_dirs: Sequence[str], status: str, budget_s: float
) -> bool:
    """Deliver the children's journals, then close the parent with ``status``; True when done.

    While a child is undelivered the parent stays RUNNING (job state DELIVERING) and is handed
    over: the next `glamhpc runs`/`report`/`sweep` completes both.
    """
    from glamhpc.tracking.runs import JOB_STATE_TAG, finalize_parent, log_tags
    from glamhpc.tracking.uri import client, resolve_uri

    _, left = deliver_runs([Path(d) for d in run_dirs], uri, budget_s)
    entry = Handover(
        "parent", resolve_uri(uri), parent_run_id=parent_run_id, status=status,
        run_dirs=list(run_dirs),
    )  # fmt: skip
    if left:
        for root in left:
            if not Handover("run", "", str(root)).path().is_file():
                hand_over_run(root, _recorded_uri(root) or entry.uri, "sweep finalizer")
        hand_over(entry)
        try:
            log_tags(client(entry.uri), parent_run_id, {JOB_STATE_TAG: "DELIVERING"})
        except Exception as exc:  # the server may be the reason; the hand-over is recorded
            log.warning("could not tag the sweep parent %s: %s", parent_run_id, short_error(exc))
        return False
    finalize_parent(parent_run_id, status, entry.uri)
    entry.path().unlink(missing_ok=True)
    return True


def deliver_handed_over(budget_s: float = DELIVERY_BUDGET_S) -> list[str]:
    """The delivery step of `glamhpc runs` / `report` / `sweep`: one line per thing done or left.

    Handed-over runs first, then sweep parents whose children are all delivered now.
    """
    entries = load_all()
    if not entries:
        return []
    deadline = time.monotonic() + budget_s
    runs = [Path(e.run_dir) for e in entries if e.kind == "run"]
    lines: list[str] = []
    if runs:
        done, left = deliver_runs(runs, None, budget_s)
        if done:
            lines.append(f"delivered the tracking journals of {len(done)} handed-over run(s)")
        for root in left:
            points = pending_points(root)
            lines.append(
                f"{root}: {points} points not yet delivered to MLflow "
                f"(`glamhpc sync {root}` delivers them)"
            )
    for entry in entries:
        if entry.kind != "parent":
            continue
        remaining = max(1.0, deadline - time.monotonic())
        try:
            closed = finalize_when_delivered(
                entry.parent_run_id, entry.uri, entry.run_dirs, entry.status, remaining
            )
        except Exception as exc:
            lines.append(f"sweep parent {entry.parent_run_id}: not closed ({short_error(exc)})")
            continue
        if closed:
            lines.append(f"sweep parent {entry.parent_run_id} closed as {entry.status}")
        else:
            lines.append(f"sweep parent {entry.parent_run_id}: children undelivered, stays RUNNING")
    return lines


def undelivered_by_run_id() -> dict[str, int]:
    """MLflow run id -> points still in its journal, for the handed-over runs (`glamhpc runs`)."""
    out: dict[str, int] = {}
    for entry in undelivered_runs():
        id_file = Path(entry.run_dir) / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else ""
        if run_id:
            out[run_id] = entry.points
    return out


def delivery_step(budget_s: float = DELIVERY_BUDGET_S) -> list[str]:
    """``deliver_handed_over`` for a CLI command: never fails the command it runs in."""
    try:
        return deliver_handed_over(budget_s)
    except Exception as exc:  # the command's own work matters more than this step
        return [f"handed-over tracking journals not delivered now: {short_error(exc)}"]


def undelivered_notes() -> list[str]:
    """One line per handed-over run still undelivered (`glamhpc jobs` prints them as notes)."""
    return [
        f"{e.run_dir}: {e.points} points not yet delivered to MLflow ({e.reason}); "
        f"`glamhpc runs` or `glamhpc sync {e.run_dir}` delivers them"
        for e in undelivered_runs()
    ]
