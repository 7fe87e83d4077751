"""Issue 12, tracking server: shutdown on every stop signal, basic-auth without argv secrets, a
loud warning for an exposed server without auth, one-line errors for bad addresses and ports."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import stat
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from server_cli import ServerCli, alive_in_group, all_cmdlines, listeners
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.config import load_config, to_dict
from glamhpc.tracking import Tracker
from glamhpc.tracking.server import free_port

runner = CliRunner()


def _data_with_store(tmp_path: Path, template: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(template, data / "mlflow.db")  # migrated already: a faster boot
    return data


@pytest.mark.mlflow_server
@pytest.mark.parametrize(
    ("sig", "host"), [(signal.SIGTERM, "127.0.0.1"), (signal.SIGHUP, "0.0.0.0")]
)
def test_stop_signal_ends_the_server_and_all_its_workers(
    sig: int, host: str, tmp_path: Path, _sqlite_template: Path
) -> None:
    """A foreground `glamhpc tracking-server` killed by SIGTERM (scheduler, systemd) or SIGHUP
    (the login shell closed) used to die alone and orphan the MLflow server, still listening."""
    data = _data_with_store(tmp_path, _sqlite_template)
    port = free_port()
    cli = ServerCli(
        ["--port", str(port), "--host", host,
         "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
         "--artifacts-destination", str(data / "artifacts")],
        tmp_path / "cli.log",
    )  # fmt: skip
    try:
        cli.wait_ready(port)
        serving = listeners(port)
        groups = {os.getpgid(pid) for pid in serving}
        assert serving and cli.process.pid not in serving
    except BaseException:
        cli.kill()
        raise
    code = cli.signal(sig)
    out = cli.output()
    assert code == 0, out
    assert "stopped" in out and "Traceback" not in out
    deadline = time.monotonic() + 10
    while listeners(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listeners(port) == set(), out
    assert all(alive_in_group(g) == [] for g in groups), [alive_in_group(g) for g in groups]
    # The exposure warning: loud for a wildcard bind without auth, absent on loopback.
    assert ("WITHOUT --auth" in out) == (host == "0.0.0.0"), out


@pytest.mark.mlflow_server
def test_auth_refuses_anonymous_writers_and_keeps_secrets_off_argv(
    tmp_path: Path, _sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in (
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ):
        monkeypatch.delenv(var, raising=False)
    data = _data_with_store(tmp_path, _sqlite_template)
    port = free_port()
    cli = ServerCli(
        ["--data", str(data), "--port", str(port), "--auth", "--workers", "1"], tmp_path / "cli.log"
    )
    try:
        cli.wait_ready(port)
        creds = data / "secrets" / "credentials"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        assert stat.S_IMODE((data / "secrets").stat().st_mode) == 0o700
        parser = configparser.ConfigParser()
        parser.read(creds)
        user = parser["mlflow"]["mlflow_tracking_username"]
        password = parser["mlflow"]["mlflow_tracking_password"]
        uri = f"http://127.0.0.1:{port}"
        # Anonymous: refused, for writes and reads.
        anon = requests.post(
            f"{uri}/api/2.0/mlflow/experiments/create", json={"name": "anon"}, timeout=30
        )
        assert anon.status_code == 401
        wrong = requests.get(
            f"{uri}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=(user, "wrong"),
            timeout=30,
        )
        assert wrong.status_code == 401
        # The documented way for writers: credentials in the environment.
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        monkeypatch.chdir(tmp_path)
        run_dir = tmp_path / "runs" / "auth" / "r"
        with Tracker.start(run_dir, to_dict(load_config()), "auth", uri, "r", {}) as tracker:
            tracker.log_metrics({"success_rate": 0.5}, step=0)
        run = MlflowClient(uri).get_run(tracker.run_id or "")
        assert run.info.status == "FINISHED" and run.data.metrics["success_rate"] == 0.5
        # The password is on no command line and in no log.
        assert not [c for c in all_cmdlines() if password in c]
        assert password not in cli.output()  # the CLI's and the server's output
        assert "MLFLOW_TRACKING_USERNAME" in cli.output()  # tells writers how to authenticate
    except BaseException:
        cli.kill()
        raise
    assert cli.signal(signal.SIGINT) == 0
    assert listeners(port) == set()


def _one_line(args: list[str]) -> str:
    result = runner.invoke(app, ["tracking-server", *args])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    return result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "::1"], "IPv6"),
        (["--port", "99999"], "1-65535"),
        (["--port", "0"], "1-65535"),
        (["--host", "no-such-host.invalid"], "not an IPv4 address"),
        (["--host", "192.0.2.1"], "address of this machine"),
        (["--backend-store-uri", "postgresql://mlflow:s3cret@db/mlflow"], "PGPASSFILE"),
        (["--backend", "mysql"], "sqlite or postgres"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_bad_addresses_and_ports_are_one_line(
    args: list[str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = _one_line(args)
    assert says in out and "s3cret" not in out
    assert list(tmp_path.iterdir()) == []  # nothing created before the arguments were checked


def test_busy_port_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _one_line(["--port", str(port)])
    assert "already in use" in out and "--port" in out
