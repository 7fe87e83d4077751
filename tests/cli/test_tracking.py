"""`glamhpc runs / report / sync / tracking-server` through Typer's CliRunner, on real stores."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.config import load_config, to_dict
from glamhpc.tracking import Tracker
from glamhpc.tracking.server import MlflowServer, public_uri

runner = CliRunner()
DEAD_URI = "http://127.0.0.1:9"


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_runs_table(sweep_2x2: tuple[str, str, list[str]]) -> None:
    uri, parent, _ = sweep_2x2
    code, out = _run("runs", "sweep", "--uri", uri)
    assert code == 0, out
    assert "lr0.001-seed2" in out and "COMPLETED" in out and parent in out
    assert "38,400" in out  # frames of the children


def test_report_writes_png_and_table(sweep_2x2: tuple[str, str, list[str]], tmp_path: Path) -> None:
    uri, parent, _ = sweep_2x2
    code, out = _run("report", parent, "--uri", uri, "--out", str(tmp_path / "r"))
    assert code == 0, out
    assert "| ppo.lr=0.0001 | 2 |" in out and "logged to the sweep's parent run" in out
    assert (tmp_path / "r" / "learning_curves.png").is_file()


@pytest.mark.parametrize("command", ["runs", "report"])
def test_unknown_experiment_is_one_clear_line(
    sweep_2x2: tuple[str, str, list[str]], command: str
) -> None:
    uri, _, _ = sweep_2x2
    code, out = _run(command, "no-such-exp", "--uri", uri)
    assert code == 2
    assert "unknown experiment 'no-such-exp'" in out and "existing experiments:" in out
    assert "sweep" in out


@pytest.mark.parametrize("command", [["runs"], ["report", "x"]])
def test_unreachable_uri_is_one_clear_line(command: list[str]) -> None:
    code, out = _run(*command, "--uri", DEAD_URI)
    assert code == 2
    assert out.count("\n") == 1 and DEAD_URI in out and "glamhpc tracking-server" in out


def test_sync_errors_for_wrong_run_dirs(tmp_path: Path) -> None:
    code, out = _run("sync", str(tmp_path / "missing"))
    assert code == 2 and "run directory not found" in out
    code, out = _run("sync", str(tmp_path))
    assert code == 2 and "no tracking journal" in out


def test_sync_replays_an_offline_journal(tracking_env: Path, sqlite_uri: str) -> None:
    run_dir = tracking_env / "runs" / "offline" / "r"
    tracker = Tracker.start(
        run_dir, to_dict(load_config()), "offline", DEAD_URI, "r", {"where": "node"},
        offline_ok=True, retry_max_s=0.2,
    )  # fmt: skip
    for step in range(50):
        tracker.log_metrics({"success_rate": step / 50, "loss": 1.0}, step=step * 1280)
    (run_dir / "f.txt").write_text("x")  # uploads come from inside the run directory only
    tracker.log_artifact(run_dir / "f.txt")
    assert not tracker.finish(timeout_s=0.3)
    code, out = _run("sync", str(run_dir), "--uri", sqlite_uri)
    assert code == 0, out
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert run_id in out
    code, _ = _run("sync", str(run_dir))  # again, now with the recorded URI: nothing doubles
    assert code == 0
    client = MlflowClient(sqlite_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["where"] == "node"
    assert run.data.params["seed"] == "1"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [
        s * 1280 for s in range(50)
    ]
    assert {"config.yaml", "f.txt"} <= {a.path for a in client.list_artifacts(run_id)}


@pytest.mark.mlflow_server
def test_tracking_server_refuses_a_busy_port(mlflow_server: MlflowServer) -> None:
    # Booting a second server here would cost 6-15 s on 2 shared cores; the session fixture
    # already starts one through start_server(), the function this command runs.
    code, out = _run("tracking-server", "--port", str(mlflow_server.port), "--detach")
    assert code == 2 and "already in use" in out and "--port" in out


def test_public_uri_for_compute_nodes() -> None:
    assert public_uri("127.0.0.1", 5000) == "http://127.0.0.1:5000"
    assert public_uri("0.0.0.0", 5001) == f"http://{socket.getfqdn()}:5001"


def test_tracking_server_help_says_when_it_is_needed() -> None:
    code, out = _run("tracking-server", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "SQLite" in flat and "network" in flat and "MLFLOW_TRACKING_URI" in flat


@pytest.mark.parametrize("command", [["runs"], ["report", "some-exp"], ["runs", "some-exp"]])
def test_reading_commands_never_create_a_store(command: list[str], tracking_env: Path) -> None:
    """`runs` and `report` in a folder without mlflow.db used to create an empty one there."""
    code, out = _run(*command)
    assert code == 2 and out.count("\n") == 1
    assert "no MLflow tracking store" in out and "--uri" in out
    assert not (tracking_env / "mlflow.db").exists()
    assert list(tracking_env.iterdir()) == []
