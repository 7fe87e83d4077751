"""`glamhpc tracking-server --backend postgres --auth`, the cluster recipe, for real: Debian's
PostgreSQL started in a private data folder (as the unprivileged `postgres` user when the tests
run as root), a run logged through our Tracker, read back, and everything stopped by one SIGINT.

Skipped only where the PostgreSQL binaries are missing, and never in CI (GLAMHPC_REQUIRE_SLURM=1
there: .ci/run installs the postgresql package)."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from server_cli import ServerCli, alive_in_group, all_cmdlines, listeners

from glamhpc.config import load_config, to_dict
from glamhpc.tracking import Tracker, TrackingError
from glamhpc.tracking.postgres import find_bindir
from glamhpc.tracking.server import free_port, pool_env

pytestmark = pytest.mark.mlflow_server


def _require_postgres() -> None:
    try:
        find_bindir()
    except TrackingError as exc:
        if os.environ.get("GLAMHPC_REQUIRE_SLURM") == "1" or os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {exc}")
        pytest.skip(f"PostgreSQL server binaries not installed ({exc})")


@pytest.fixture
def pg_data() -> Iterator[Path]:
    """A data folder under /tmp, not pytest's 0700 tmp tree: as root, postgres runs as the
    `postgres` user, which must be able to search the folders above its data folder."""
    _require_postgres()
    root = Path(tempfile.mkdtemp(prefix="glamhpc-pg-"))
    root.chmod(0o711)  # searchable, not listable (as a cluster's /srv/$USER would be)
    try:
        yield root / "data"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_backed_server_with_auth_logs_a_run(
    pg_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in (
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ):
        monkeypatch.delenv(var, raising=False)
    port = free_port()
    cli = ServerCli(
        ["--backend", "postgres", "--data", str(pg_data), "--port", str(port), "--auth",
         "--workers", "2", "--writers", "16"],
        tmp_path / "cli.log",
    )  # fmt: skip
    try:
        cli.wait_ready(port)
        out = cli.output()
        assert "postgresql+psycopg2://mlflow@127.0.0.1:" in out  # the store URI: no password in it
        pgpass = pg_data / "secrets" / "pgpass"
        assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
        assert stat.S_IMODE((pg_data / "postgres").stat().st_mode) == 0o700
        passwords = [line.rsplit(":", 1)[1] for line in pgpass.read_text().splitlines()]
        parser = configparser.ConfigParser()
        parser.read(pg_data / "secrets" / "credentials")
        user = parser["mlflow"]["mlflow_tracking_username"]
        password = parser["mlflow"]["mlflow_tracking_password"]
        for secret in [*passwords, password]:  # on no command line of this machine, in no log
            assert not [c for c in all_cmdlines() if secret in c]
            assert secret not in out
            assert secret not in (pg_data / "postgres.log").read_text(errors="replace")
        pg_pid = int(out.split("postgres pid ")[1].split()[0])
        mlflow_group = int(out.split("mlflow server process group ")[1].split(";")[0])

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        monkeypatch.chdir(tmp_path)
        uri = f"http://127.0.0.1:{port}"
        run_dir = tmp_path / "runs" / "pg" / "r"
        with Tracker.start(run_dir, to_dict(load_config()), "pg", uri, "r", {"db": "pg"}) as tr:
            for step in range(20):
                tr.log_metrics({"success_rate": step / 20, "policy_loss": 1.0}, step=step * 64)
        client = MlflowClient(uri)
        run = client.get_run(tr.run_id or "")
        assert run.info.status == "FINISHED" and run.data.tags["db"] == "pg"
        assert run.data.params["seed"] == "1"
        history = client.get_metric_history(run.info.run_id, "success_rate")
        assert sorted(m.step for m in history) == [s * 64 for s in range(20)]
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    except BaseException:
        cli.kill()
        raise
    assert cli.signal(signal.SIGINT) == 0, cli.output()
    assert "stopped" in cli.output()
    deadline = time.monotonic() + 10
    while (listeners(port) or alive_in_group(pg_pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listeners(port) == set()
    assert alive_in_group(mlflow_group) == [] and alive_in_group(pg_pid) == []
    assert "database system is shut down" in (pg_data / "postgres.log").read_text()


def test_pool_is_sized_for_the_workers_threads() -> None:
    """Two connections per request (log_batch holds one session and opens a second) for every
    thread of a worker: 40 threads -> 84, never SQLAlchemy's default 5 + 10."""
    env = pool_env("postgresql://mlflow@127.0.0.1:5432/mlflow", writers=128)
    assert (
        int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"])
        + int(env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"])
        >= 80
    )
    assert pool_env("sqlite:////x/mlflow.db") == {"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}
