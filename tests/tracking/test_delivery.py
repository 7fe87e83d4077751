"""Delivery under load (issue 17): backoff with jitter, honest messages, batch limits, and no run
left undelivered (hand-over at exit, the delivery step of `glamhpc runs`, the sweep finalizer)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow.utils.validation as limits
import pytest
import requests
from mlflow import MlflowClient

from glamhpc.launch.sweep_driver import finalize_sweep
from glamhpc.tracking import Tracker, create_parent_run, handover
from glamhpc.tracking.diagnose import Outage, likely_cause
from glamhpc.tracking.journal import JOURNAL
from glamhpc.tracking.lock import RunDirLock
from glamhpc.tracking.runs import MAX_METRICS_PER_BATCH, MAX_PARAMS_OR_TAGS_PER_BATCH

DEAD_URI = "http://127.0.0.1:9"
REPO = Path(__file__).resolve().parents[2]

QUEUEPOOL = (
    "API request to endpoint /api/2.0/mlflow/runs/log-batch failed with error code 400 != 200. "
    "Response body: 'QueuePool limit of size 5 overflow 10 reached, connection timed out, "
    "timeout 30.00'"
)


def _refused() -> BaseException:
    try:
        requests.get(DEAD_URI, timeout=2)
    except requests.RequestException as exc:
        return exc
    raise AssertionError("something listens on the discard port")


def test_batch_limits_are_the_installed_mlflow_limits() -> None:
    assert MAX_METRICS_PER_BATCH == limits.MAX_METRICS_PER_BATCH
    assert MAX_PARAMS_OR_TAGS_PER_BATCH == limits.MAX_PARAMS_TAGS_PER_BATCH


def test_backoff_grows_is_capped_and_jittered() -> None:
    outages = [Outage(DEAD_URI, Path("j"), max_s=8.0) for _ in range(32)]
    delays = []
    for outage in outages:
        outage.failures = 1
        first = outage.backoff()
        outage.failures = 12
        delays.append(outage.backoff())
        assert 0.25 <= first <= 0.5
    assert all(4.0 <= d <= 8.0 for d in delays)  # capped at max_s, never below half of it
    # 32 writers failed by the same outage do not come back together: spread over seconds.
    assert max(delays) - min(delays) > 2.0 and len({round(d, 3) for d in delays}) > 24


def test_the_likely_cause_is_named() -> None:
    assert "database connections" in likely_cause(RuntimeError(QUEUEPOOL))
    assert "--backend postgres" in likely_cause(RuntimeError(QUEUEPOOL))
    assert "SQLite" in likely_cause(RuntimeError("(sqlite3.OperationalError) database is locked"))
    assert "not reachable" in likely_cause(_refused())
    run_id = "401a403b500c"  # digits of HTTP statuses inside an id are not a status
    assert likely_cause(RuntimeError(f"run {run_id} has a bad key")) == ""


def test_messages_are_honest_and_not_repeated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="glamhpc.tracking")
    outage = Outage("http://tracking:5000", Path("run/logs/metrics.jsonl"), max_s=1.0)
    for _ in range(20):  # a retry loop against an exhausted pool
        outage.failed(RuntimeError(QUEUEPOOL))
    outage.reachable(lambda: 1234)
    outage.reachable(lambda: 1234)
    outage.failed(RuntimeError(QUEUEPOOL))  # fails again while delivering: same cause, quiet
    outage.reachable(lambda: 600)
    outage.delivered(4096)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert "failed" in lines[0] and "database connections" in lines[0]
    assert lines[1].endswith("1234 points pending, delivering")
    assert lines[2].endswith("600 points pending, delivering")
    assert "backlog delivered" in lines[3]
    assert all("\n" not in line for line in lines)
    outage.delivered(4096)  # healthy: nothing to say
    assert len(caplog.records) == 4


def test_a_job_that_gives_up_hands_its_run_over(tracking_env: Path) -> None:
    run_dir = tracking_env / "runs" / "exp" / "late"
    tracker = Tracker.start(
        run_dir, {"seed": 1}, "exp", DEAD_URI, "late", {}, offline_ok=True, retry_max_s=0.2
    )
    for step in range(5):
        tracker.log_metrics({"success_rate": step / 5, "policy_loss": 1.0}, step=step)
    assert not tracker.finish(timeout_s=0.5)
    (entry,) = handover.undelivered_runs()
    assert entry.run_dir == str(run_dir) and entry.points == 10 and entry.uri == DEAD_URI
    (note,) = handover.undelivered_notes()
    assert "10 points not yet delivered" in note and f"glamhpc sync {run_dir}" in note


def _undelivered_child(root: Path, uri: str, parent: str, name: str) -> Path:
    """A sweep child whose last records never reached the server (its job gave up waiting)."""
    run_dir = root / "runs" / "sweep-exp" / name
    with Tracker.start(run_dir, {"seed": 1}, "sweep-exp", uri, name, {}, parent) as tracker:
        tracker.log_metrics({"success_rate": 0.1}, step=1)
    (run_dir / "DONE").write_text("1\n")
    with open(run_dir / JOURNAL, "a") as fh:  # what the job journaled after the server stalled
        for step in (2, 3):
            fh.write(json.dumps({"s": step, "t": 1, "m": {"success_rate": step / 10}}) + "\n")
    return run_dir


def test_sweep_parent_stays_open_until_its_children_are_delivered(
    tracking_env: Path, sqlite_uri: str
) -> None:
    parent = create_parent_run("sweep-exp", "s", sqlite_uri, {}, {})
    children = [_undelivered_child(tracking_env, sqlite_uri, parent, f"c{i}") for i in range(2)]
    busy = RunDirLock(children[1]).acquire()  # its job still holds it: cannot deliver now
    try:
        status = finalize_sweep(parent, sqlite_uri, [str(c) for c in children], "s", 5.0)
    finally:
        busy.release()
    client = MlflowClient(sqlite_uri)
    assert status == "DELIVERING"
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.tags["glamhpc.job_state"] == "DELIVERING"
    child0 = (children[0] / "mlflow_run_id").read_text().strip()
    assert sorted(m.step for m in client.get_metric_history(child0, "success_rate")) == [1, 2, 3]
    # The next `glamhpc runs` (a fresh process, as a user would run it) completes both.
    env = {**os.environ, "GLAMHPC_STATE_DIR": os.environ["GLAMHPC_STATE_DIR"]}
    done = subprocess.run(
        [sys.executable, "-m", "glamhpc", "runs", "sweep-exp", "--uri", sqlite_uri],
        capture_output=True, text=True, env=env, cwd=tracking_env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "delivered the tracking journals of 1 handed-over run(s)" in done.stderr
    assert f"sweep parent {parent} closed as FINISHED" in done.stderr
    assert client.get_run(parent).info.status == "FINISHED"
    child1 = (children[1] / "mlflow_run_id").read_text().strip()
    assert sorted(m.step for m in client.get_metric_history(child1, "success_rate")) == [1, 2, 3]
    assert handover.load_all() == []
