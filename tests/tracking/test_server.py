"""Tracker against a real `mlflow server` on loopback: idempotence, artifacts, the outage test."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from glamhpc.config import load_config, to_dict
from glamhpc.tracking import Tracker
from glamhpc.tracking.server import MlflowServer

pytestmark = pytest.mark.mlflow_server

KEYS = [f"m{i:02d}" for i in range(30)]  # a typical update logs ~30 metrics


def _values(step: int) -> dict[str, float]:
    return {key: step + i / 100 for i, key in enumerate(KEYS)}


def test_server_ignores_an_identical_resent_batch(mlflow_server: MlflowServer) -> None:
    """The MLflow behaviour the sender relies on when an acknowledgement is lost."""
    client = MlflowClient(mlflow_server.uri)
    exp = client.create_experiment(f"idempotent-{time.time_ns()}")
    run_id = client.create_run(exp).info.run_id
    batch = [Metric("loss", 0.5, 1_700_000_000_000, step) for step in range(3)]
    client.log_batch(run_id, metrics=batch)
    client.log_batch(run_id, metrics=batch)  # the reply of the first one was "lost"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2]


def test_artifacts_and_tags_reach_the_server(
    mlflow_server: MlflowServer, tracking_env: Path
) -> None:
    run_dir = tracking_env / "runs" / "srv" / "a"
    model = run_dir / "model"  # uploads come from inside the run directory only
    model.mkdir(parents=True)
    (model / "weights.safetensors").write_bytes(b"\0" * 1024)
    config = to_dict(load_config())
    with Tracker.start(run_dir, config, "srv", mlflow_server.uri, "a", {"t": "1"}) as tracker:
        tracker.log_metrics(_values(0), step=0)
        tracker.log_artifacts(model, "model")
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(tracker.run_id or "")
    assert run.info.status == "FINISHED" and run.data.tags["t"] == "1"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == [
        "model/weights.safetensors"
    ]
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_outage_server_killed_and_restarted_mid_run(
    mlflow_server: MlflowServer, tracking_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL the server's process group mid-run, restart it on the same port and store while
    the loop keeps logging: every step arrives exactly once and no log call blocks."""
    caplog.set_level(logging.WARNING, logger="glamhpc.tracking")
    run_dir = tracking_env / "runs" / "outage" / "run"
    tracker = Tracker.start(
        run_dir, to_dict(load_config()), "outage", mlflow_server.uri, "run", {}, retry_max_s=0.5
    )
    durations: list[float] = []

    def log(step: int) -> None:
        t0 = time.perf_counter()
        tracker.log_metrics(_values(step), step=step)
        durations.append(time.perf_counter() - t0)
        time.sleep(0.02)  # the "update" (real ones take seconds: this is 100x denser)

    step = 0
    while step < 100:  # healthy phase: batches are delivered and acknowledged
        log(step)
        step += 1
    delivered_before = tracker._sender.state.offset
    mlflow_server.kill()
    restart = threading.Thread(target=mlflow_server.start, kwargs={"ready_timeout_s": 120})
    outage_start = step
    restart.start()
    try:
        while restart.is_alive() or step < outage_start + 100:  # down, then booting
            log(step)
            step += 1
        restart.join()
        for _ in range(100):  # back up
            log(step)
            step += 1
        assert tracker.finish(timeout_s=120)
    finally:
        restart.join()
    total = step
    client = MlflowClient(mlflow_server.uri)
    run_id = tracker.run_id or ""
    assert client.get_run(run_id).info.status == "FINISHED"
    for i, key in enumerate(KEYS):
        history = client.get_metric_history(run_id, key)
        steps = sorted(m.step for m in history)
        assert steps == list(range(total)), f"{key}: {len(steps)} points for {total} steps"
        assert all(m.value == pytest.approx(m.step + i / 100) for m in history)
    assert delivered_before > 0
    assert total - outage_start > 200  # the outage really spanned many updates
    # Never blocked (a call waiting on the network would take seconds): every call is bounded
    # and the typical one is well below a millisecond (5 ms leaves room for a loaded CI box).
    assert max(durations) < 0.5, max(durations)
    assert statistics.median(durations) < 0.005
    warnings = [r for r in caplog.records if "training continues" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not per step
