"""The metrics journal is a file in the run directory: anyone who can write there can plant records.

Two holes of issue 12, each shown to fail before the fix:
* ``{"artifact": PATH}`` records uploaded any path on resume or `glamhpc sync` (an absolute path,
  or a symlink in the run directory pointing out of it): uploads now come only from inside the
  run directory, anything else is skipped with one warning;
* a record without ``s`` (or any malformed record) raised a traceback at every resume, so the run
  could never be resumed: it is now skipped with one line naming the file and the line, and
  everything after it is still delivered (decision documented in docs/TRACKING.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from mlflow import MlflowClient

from glamhpc.tracking import Tracker, sync_run_dir
from glamhpc.tracking.journal import JOURNAL


def _all_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        found.add(info.path)
        if info.is_dir:
            found |= _all_artifacts(client, run_id, info.path)
    return found


def _plant(run_dir: Path, *records: dict | str) -> None:
    with open(run_dir / JOURNAL, "a", encoding="utf-8") as fh:
        for record in records:
            fh.write((record if isinstance(record, str) else json.dumps(record)) + "\n")


def test_planted_artifact_records_upload_nothing_from_outside_the_run_dir(
    tracking_env: Path, sqlite_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tracking_env / "secret.txt"
    secret.write_text("private key material")
    run_dir = tracking_env / "runs" / "exp" / "r"
    with Tracker.start(run_dir, {"seed": 1}, "exp", sqlite_uri, "r", {}) as tracker:
        tracker.log_metrics({"success_rate": 0.5}, step=1)
    run_id = tracker.run_id or ""
    inside = run_dir / "logs" / "kept.txt"
    inside.write_text("fine")
    (run_dir / "logs" / "escape.txt").symlink_to(secret)
    folder = run_dir / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 8)
    (folder / "leak.txt").symlink_to(secret)  # one escaping file inside an uploaded folder
    _plant(
        run_dir,
        {"artifact": str(secret), "dest": "stolen"},
        {"artifact": str(run_dir / "logs" / "escape.txt"), "dest": "stolen2"},
        {"artifact": str(run_dir / ".." / ".." / ".." / "secret.txt"), "dest": "stolen3"},
        {"artifact": str(folder), "dest": "model"},
        {"artifact": str(inside), "dest": "ok"},
        {"s": 2, "t": 1, "m": {"success_rate": 0.7}},
    )
    caplog.set_level(logging.WARNING, logger="glamhpc.tracking")
    _, done, _ = sync_run_dir(run_dir, sqlite_uri, timeout_s=60)
    assert done
    uploaded = _all_artifacts(MlflowClient(sqlite_uri), run_id)
    assert "ok/kept.txt" in uploaded  # a legitimate upload after the planted ones still works
    assert not any(p.startswith(("stolen", "model")) for p in uploaded), uploaded
    history = MlflowClient(sqlite_uri).get_metric_history(run_id, "success_rate")
    assert sorted(m.step for m in history) == [1, 2]  # nothing behind them was blocked
    refused = [
        r.getMessage() for r in caplog.records if "outside the run directory" in r.getMessage()
    ]
    assert len(refused) == 4, refused
    assert all("\n" not in line for line in refused)


def test_log_artifact_outside_the_run_dir_is_refused_at_the_call(
    tracking_env: Path, sqlite_uri: str
) -> None:
    outside = tracking_env / "notes.txt"
    outside.write_text("x")
    run_dir = tracking_env / "runs" / "exp" / "call"
    with (
        Tracker.start(run_dir, {"seed": 1}, "exp", sqlite_uri, "call", {}) as tracker,
        pytest.raises(ValueError, match="inside the run directory"),
    ):
        tracker.log_artifact(outside, "notes")
    assert "notes.txt" not in (run_dir / JOURNAL).read_text()


BAD_RECORDS: list[dict | str] = [
    {"t": 5, "m": {"success_rate": 0.1}},  # no "s" (the reported case)
    {"s": "x", "t": 5, "m": {"success_rate": 0.1}},  # step not a number
    {"s": 3, "t": 5, "m": ["success_rate"]},  # metrics not an object
    {"s": 3, "t": 5, "m": {"success_rate": "high"}},  # value not a number
    {"s": 3, "m": {"success_rate": 0.2}},  # no timestamp
    {"tags": ["a", "b"]},
    {"artifact": 7},
    {"status": "EXPLODED"},
    "[1, 2, 3]",
    "{not json",
]


@pytest.mark.parametrize("bad", BAD_RECORDS, ids=lambda b: json.dumps(b)[:40])
def test_a_malformed_record_never_blocks_resume(
    bad: dict | str, tracking_env: Path, sqlite_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tracking_env / "runs" / "exp" / "bad"
    first = Tracker.start(run_dir, {"seed": 1}, "exp", sqlite_uri, "bad", {})
    first.log_metrics({"success_rate": 0.0}, step=1)
    assert first.finish("KILLED")
    lines_before = len((run_dir / JOURNAL).read_text().splitlines())
    _plant(run_dir, bad, {"s": 4, "t": 6, "m": {"success_rate": 0.4}})
    caplog.set_level(logging.WARNING, logger="glamhpc.tracking")
    # The resume (a requeued job) must start, skip the bad line and deliver what follows it.
    with Tracker.start(run_dir, {"seed": 1}, "exp", sqlite_uri, "bad", {}) as tracker:
        tracker.log_metrics({"success_rate": 0.9}, step=9)
    client = MlflowClient(sqlite_uri)
    run = client.get_run(tracker.run_id or "")
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "success_rate"))
    assert steps == [1, 4, 9]
    where = f"{run_dir / JOURNAL}:{lines_before + 1}"
    named = [r.getMessage() for r in caplog.records if where in r.getMessage()]
    assert named and all("\n" not in m and "skipped" in m for m in named), caplog.text
    assert len(set(named)) == 1  # one line per bad record, not one per reader
