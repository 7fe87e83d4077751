"""Real MLflow stores for the tests: one `mlflow server` per session and cheap SQLite copies.

The server runs in its own process group (setsid) with the job runner off and one worker, and
the whole group is killed at teardown. SQLite stores are copied from one migrated template
because creating a database runs MLflow's migrations (seconds each time).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from glamhpc.tracking.server import MlflowServer, free_port


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` on a free loopback port (SQLite store, proxied artifacts)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(
        backend_store_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifacts_destination=str(root / "artifacts"),
        host="127.0.0.1",
        port=free_port(),
        log_path=root / "server.log",
    )
    server.start(ready_timeout_s=120)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # runs the migrations
    return db


@pytest.fixture
def sqlite_uri(_sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite tracking store in this test's tmp dir."""
    db = tmp_path / "mlflow.db"
    shutil.copy(_sqlite_template, db)
    return f"sqlite:///{db}"


@pytest.fixture
def tracking_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No inherited MLFLOW_TRACKING_URI, and the tmp dir as cwd (the default store lands there)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path
