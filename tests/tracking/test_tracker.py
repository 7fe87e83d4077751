"""Tracker against the embedded SQLite store: what a run records, resume, offline start, sweeps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from glamhpc.config import load_config, to_dict
from glamhpc.tracking import (
    TRUNCATED,
    Tracker,
    TrackingError,
    create_parent_run,
    finalize_parent,
    metric_series,
    sweep_tags,
)
from glamhpc.tracking.journal import ACKS, JOURNAL, Journal, MetricGate, iter_records

DEAD_URI = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused


def _config(*overrides: str) -> dict:
    return to_dict(load_config(None, list(overrides)))


def _metrics(step: int) -> dict[str, float]:
    return {"success_rate": min(1.0, step / 1000), "policy_loss": 1.0 / (1 + step), "episodes": 8}


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_run_records_params_tags_metrics_artifacts(
    tracking_env: Path, sqlite_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/glamhpc.sif")
    config = _config("model.path=" + "w" * 7000, "seed=5")
    run_dir = tracking_env / "runs" / "exp" / "r1"
    with Tracker.start(run_dir, config, "exp", sqlite_uri, "r1", {"team": "glam"}) as tracker:
        note = run_dir / "note.txt"  # uploads come from inside the run directory only
        note.write_text("hello")
        for step in range(0, 5 * 1280, 1280):
            tracker.log_metrics(_metrics(step), step=step)
        tracker.log_artifact(note, "notes")
        tracker.set_tags({"phase": "warmup"})
        png = tracker.log_learning_curve()
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    client = MlflowClient(sqlite_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "r1"
    params = run.data.params
    assert params["ppo.lr"] == str(config["ppo"]["lr"])
    assert params["seed"] == "5"
    assert params["model.path"].endswith(TRUNCATED) and len(params["model.path"]) == 6000
    tags = run.data.tags
    assert tags["team"] == "glam" and tags["phase"] == "warmup"
    assert tags["model"] == "tiny-t5" and tags["seed"] == "5" and tags["level"]
    assert tags["slurm.job_id"] == "4242" and tags["slurm.array_task_id"] == "3"
    assert tags["container.image"] == "/images/glamhpc.sif"
    assert tags["glamhpc.version"] and tags["glamhpc.hosts"] and tags["glamhpc.starts"] == "1"
    assert tags["glamhpc.job_state"] == "COMPLETED"
    assert _steps(client, run_id, "success_rate") == list(range(0, 5 * 1280, 1280))
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "notes", png.name} <= artifacts
    logged = Path(client.download_artifacts(run_id, "config.yaml", str(tracking_env / "dl")))
    assert "w" * 7000 in logged.read_text()  # the full config, untruncated


def test_resume_continues_same_run_without_duplicates(tracking_env: Path, sqlite_uri: str) -> None:
    run_dir = tracking_env / "runs" / "exp" / "r"
    config = _config()
    first = Tracker.start(run_dir, config, "exp", sqlite_uri, "r", {})
    for update in range(10):
        first.log_metrics(_metrics(update * 100), step=update * 100)
    assert first.finish("KILLED")  # preempted after update 9; last checkpoint at update 5
    run_id = first.run_id
    # Params are immutable: a changed config on resume must not try to re-log them.
    second = Tracker.start(run_dir, _config("ppo.lr=0.5"), "exp", sqlite_uri, "r", {"x": "1"})
    assert second.resumed and second.run_id == run_id
    client = MlflowClient(sqlite_uri)
    second.flush(30)
    assert client.get_run(run_id).info.status == "RUNNING"
    for update in range(6, 15):  # a deterministic trainer recomputes updates 6..9
        second.log_metrics({k: -1.0 for k in _metrics(0)}, step=update * 100)
        second.log_metrics(_metrics(update * 100), step=update * 100)  # same step again
    second.finish()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["ppo.lr"] == str(config["ppo"]["lr"])
    assert run.data.tags["x"] == "1" and run.data.tags["glamhpc.starts"] == "2"
    history = client.get_metric_history(run_id, "policy_loss")
    assert sorted(m.step for m in history) == [u * 100 for u in range(15)]
    by_step = {m.step: m.value for m in history}
    assert by_step[700] == pytest.approx(_metrics(700)["policy_loss"])  # first value kept
    assert by_step[1400] == -1.0  # new steps: the first call at a step wins


def test_unreachable_uri_at_start_is_one_clear_line(tracking_env: Path) -> None:
    run_dir = tracking_env / "runs" / "exp" / "r"
    t0 = time.monotonic()
    with pytest.raises(TrackingError) as info:
        Tracker.start(run_dir, _config(), "exp", DEAD_URI, "r", {})
    assert time.monotonic() - t0 < 15
    message = str(info.value)
    assert "\n" not in message and DEAD_URI in message
    assert "glamhpc tracking-server" in message and "MLFLOW_TRACKING_URI" in message
    assert not (run_dir / "mlflow_run_id").exists()
    assert not (run_dir / "logs" / "mlflow_pending_run.json").exists()


def test_offline_start_is_replayed_by_the_next_start(tracking_env: Path, sqlite_uri: str) -> None:
    run_dir = tracking_env / "runs" / "exp" / "off"
    offline = Tracker.start(
        run_dir, _config(), "exp", DEAD_URI, "off", {"k": "v"}, offline_ok=True, retry_max_s=0.2
    )
    assert offline.run_id is None
    for step in range(5):
        offline.log_metrics(_metrics(step), step=step)
    assert not offline.finish("KILLED", timeout_s=0.5)  # nothing reachable: kept locally
    assert (run_dir / JOURNAL).is_file() and not (run_dir / "mlflow_run_id").exists()
    # The next start (server now reachable) creates the run, replays, then continues.
    client = MlflowClient(sqlite_uri)
    with Tracker.start(run_dir, _config(), "exp", sqlite_uri, "off", {}) as tracker:
        assert tracker.resumed
        for step in range(3, 8):
            tracker.log_metrics(_metrics(step), step=step)
        assert tracker.flush(30)
        # The KILLED of the offline start was replayed first, then RUNNING again.
        assert client.get_run(tracker.run_id or "").info.status == "RUNNING"
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["k"] == "v"
    assert run.data.params["seed"] == "1"
    assert _steps(client, run_id, "success_rate") == list(range(8))


def test_lost_acknowledgement_does_not_duplicate(tracking_env: Path, sqlite_uri: str) -> None:
    """The server got the batches but the ack never hit the disk (crash right after send)."""
    run_dir = tracking_env / "runs" / "exp" / "ack"
    with Tracker.start(run_dir, _config(), "exp", sqlite_uri, "ack", {}) as tracker:
        for step in range(20):
            tracker.log_metrics(_metrics(step), step=step)
    (run_dir / ACKS).write_text(json.dumps({"offset": 0, "delivered_max": {}}))
    with Tracker.start(run_dir, _config(), "exp", sqlite_uri, "ack", {}) as tracker:
        tracker.log_metrics(_metrics(20), step=20)
    client = MlflowClient(sqlite_uri)
    assert _steps(client, tracker.run_id or "", "policy_loss") == list(range(21))


def test_gate_dedupes_and_journal_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    gate = MetricGate(journal, {"a": 5})
    assert gate.log({"a": 1.0}, 5, 0) is None  # at the delivered max: dropped
    assert gate.log({"a": 1.0, "b": 2.0}, 6, 0) is not None
    assert gate.log({"b": 3.0}, 6, 0) is None  # second value at the same step: dropped
    gate.log({"bad key!": 1, "n": "x"}, 7, 0)  # invalid name sanitised, non-number skipped
    journal.close()
    with open(path, "ab") as fh:
        fh.write(b'{"s": 9, "t": 0, "m": {"a"')  # a crash mid-append
    journal = Journal(path)  # repairs the tail
    journal.append({"s": 10, "t": 0, "m": {"a": 4.0}})
    journal.close()
    records = [r for _, r in iter_records(path)]
    assert [r["s"] for r in records] == [6, 7, 10]
    assert records[1]["m"] == {"bad key_": 1.0}
    assert metric_series(path, "a") == ([6, 10], [1.0, 4.0])


def test_local_sweep_2x2_parent_and_children(tracking_env: Path, sqlite_uri: str) -> None:
    parent = create_parent_run(
        "sweep-exp", "lr-sweep", sqlite_uri, {"ppo.lr": "[0.0001, 0.001]", "seed": "[1, 2]"}, {}
    )
    children = []
    for lr in (1e-4, 1e-3):
        for seed in (1, 2):
            name = f"lr{lr}-s{seed}"
            config = _config(f"ppo.lr={lr}", f"seed={seed}")
            tags = sweep_tags({"ppo.lr": lr, "seed": seed})
            with Tracker.start(
                tracking_env / "runs" / name, config, "sweep-exp", sqlite_uri, name, tags, parent
            ) as tracker:
                tracker.log_metrics({"success_rate": 0.1 * seed}, step=1280)
            children.append(tracker.run_id)
    finalize_parent(parent, "FINISHED", sqlite_uri)
    client = MlflowClient(sqlite_uri)
    exp = client.get_experiment_by_name("sweep-exp")
    found = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert sorted(r.info.run_id for r in found) == sorted(children)
    assert {r.data.tags["sweep.ppo.lr"] for r in found} == {"0.0001", "0.001"}
    assert {r.data.tags["sweep.seed"] for r in found} == {"1", "2"}
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.tags["glamhpc.sweep"] == "parent"
    assert parent_run.data.params["ppo.lr"] == "[0.0001, 0.001]"


def test_system_metrics_are_sampled_by_the_sender(tracking_env: Path, sqlite_uri: str) -> None:
    run_dir = tracking_env / "runs" / "exp" / "sys"
    tracker = Tracker.start(
        run_dir, _config("tracking.system_metrics=true", "tracking.system_metrics_interval_s=0.5"),
        "exp", sqlite_uri, "sys", {},
    )  # fmt: skip
    for step in range(4):
        tracker.log_metrics(_metrics(step), step=step)
        time.sleep(0.4)
    tracker.finish()
    client = MlflowClient(sqlite_uri)
    latest = client.get_run(tracker.run_id or "").data.metrics
    assert 0 <= latest["system/cpu_utilization_percentage"] <= 100 * 64
    assert latest["system/process_memory_rss_megabytes"] > 10
    steps = _steps(client, tracker.run_id or "", "system/system_memory_usage_megabytes")
    assert steps and len(steps) == len(set(steps))  # at most one sample per training step


def test_crashed_process_closes_its_run_as_failed(tracking_env: Path, sqlite_uri: str) -> None:
    """A trainer that dies on an exception never calls finish(): the exit hook does."""
    import subprocess
    import sys

    run_dir = tracking_env / "runs" / "exp" / "crash"
    script = (
        "from glamhpc.tracking import Tracker\n"
        f"t = Tracker.start({str(run_dir)!r}, {{'seed': 1}}, 'exp', {sqlite_uri!r}, None, {{}})\n"
        "for s in range(5): t.log_metrics({'loss': s}, step=s)\n"
        "raise RuntimeError('boom')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1 and "boom" in done.stderr
    client = MlflowClient(sqlite_uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert client.get_run(run_id).info.status == "FAILED"
    assert _steps(client, run_id, "loss") == [0, 1, 2, 3, 4]


def test_second_start_in_one_process_closes_the_abandoned_tracker(
    tracking_env: Path, sqlite_uri: str
) -> None:
    run_dir = tracking_env / "runs" / "exp" / "again"
    first = Tracker.start(run_dir, _config(), "exp", sqlite_uri, None, {})
    first.log_metrics(_metrics(0), step=0)  # ... then the trainer raised, no finish()
    with Tracker.start(run_dir, _config(), "exp", sqlite_uri, None, {}) as second:
        assert second.run_id == first.run_id
        second.log_metrics(_metrics(1), step=1)
    assert _steps(MlflowClient(sqlite_uri), second.run_id or "", "policy_loss") == [0, 1]


def test_detect_container_reads_what_the_engines_put_in_every_container(tmp_path) -> None:
    from glamhpc.tracking.runs import detect_container

    assert detect_container(tmp_path) is None
    (tmp_path / ".singularity.d").mkdir()
    assert detect_container(tmp_path) == "apptainer"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".containerenv").write_text("")
    assert detect_container(tmp_path) == "podman"
    (tmp_path / ".dockerenv").write_text("")
    assert detect_container(tmp_path) == "docker"
