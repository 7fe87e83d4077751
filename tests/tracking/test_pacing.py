"""The sender's pacing and the journal's fsync under load (issue 17): what the training thread
waits for, and how many requests a slow server gets."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from glamhpc.tracking.journal import JOURNAL, AckState, Journal
from glamhpc.tracking.runs import MAX_METRICS_PER_BATCH
from glamhpc.tracking.sender import Sender


def test_fsync_runs_outside_the_append_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An fsync takes milliseconds on a loaded node: under the append lock it was what the
    # training thread's log_metrics waited for at p99. os.fsync (the OS call, not our code) is
    # observed: the lock must be free while it runs, and the journal's data must be synced.
    journal = Journal(tmp_path / JOURNAL)
    journal.append({"s": 1, "t": 1, "m": {"a": 1.0}})
    seen: list[bool] = []
    real_fsync = os.fsync

    def observing_fsync(fd: int) -> None:
        seen.append(journal._lock.locked())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", observing_fsync)
    journal.sync_to_disk()
    assert seen == [False]
    journal.close()  # fsyncs once more, under its lock (no append can follow it)
    journal.sync_to_disk()  # after close: nothing to sync, no error
    assert len(seen) == 2


def test_a_busy_sender_sends_when_a_full_batch_is_journaled(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL)
    # Nothing listens on port 9: the sender is only asked to wait here, never to send.
    sender = Sender(tmp_path, "http://127.0.0.1:9", "run", AckState(), journal=journal)
    metrics = {f"metric_{i:02d}": 0.5 for i in range(37)}
    journal.append({"s": 0, "t": 0, "m": metrics})
    sender._bytes_per_point = journal.end / len(metrics)

    def trainer() -> None:
        for step in range(1, 1 + MAX_METRICS_PER_BATCH // len(metrics) + 1):
            time.sleep(0.02)
            journal.append({"s": step, "t": step, "m": metrics})

    thread = threading.Thread(target=trainer)
    t0 = time.monotonic()
    thread.start()
    sender._wait_for_batch(time.monotonic() + 60.0)  # a slow server's pace: up to a minute
    waited = time.monotonic() - t0
    thread.join()
    assert waited < 10.0, f"waited {waited:.1f} s although a full batch was journaled"
    assert sender.pending_bytes() >= MAX_METRICS_PER_BATCH * sender._bytes_per_point
    # ... and a wake-up (flush, finish) ends the wait at once.
    sender.wake()
    t0 = time.monotonic()
    sender._wait_for_batch(time.monotonic() + 60.0)
    assert time.monotonic() - t0 < 1.0
    journal.close()
