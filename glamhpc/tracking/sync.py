"""`glamhpc sync RUN_DIR`: deliver what a run directory's journal still holds, after the job."""

from __future__ import annotations

import os
from pathlib import Path

from glamhpc.tracking.journal import ACKS, JOURNAL, PENDING_RUN, RUN_ID_FILE, STATE, AckState
from glamhpc.tracking.lock import RunDirLock
from glamhpc.tracking.sender import Sender
from glamhpc.tracking.start import check_existing, read_json, read_run_id, write_state
from glamhpc.tracking.uri import TrackingError, apply_http_defaults, client, probe, resolve_uri


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
    state = read_json(root / STATE)
    resolved = resolve_uri(uri or state.get("uri"))
    apply_http_defaults()
    probe(resolved)
    lock = RunDirLock(root).acquire()
    try:
        run_id = read_run_id(root)
        if run_id is not None:
            # A sync is never "offline ok": it exists to reach the server.
            check_existing(client(resolved), run_id, root, resolved, state, offline_ok=False)
        sender = Sender(root, resolved, run_id, AckState.load(root / ACKS), retry_max_s=5.0)
        done = sender.drain(timeout_s)
        if done:
            from glamhpc.tracking.handover import clear

            clear(root)
        if done and uri and state.get("uri") != resolved:
            state["uri"] = resolved
            write_state(root, state)
        return sender.run_id, done, sender.pending_bytes()
    finally:
        lock.release()
