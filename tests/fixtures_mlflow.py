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

from glamhpc.tracking.server import MlflowServer, free_port, start_server


@pytest.fixture(scope="session")
def mlflow_server(
    _sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """A real `mlflow server` on a free loopback port (SQLite store, proxied artifacts)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy(_sqlite_template, root / "mlflow.db")  # already migrated: a faster boot
    # start_server is what `glamhpc tracking-server` runs: the fixture exercises that path.
    server = start_server(
        f"sqlite:///{root / 'mlflow.db'}",
        str(root / "artifacts"),
        host="127.0.0.1",
        port=free_port(),
        log_path=root / "server.log",
        ready_timeout_s=120,
    )
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
    """No inherited MLFLOW_TRACKING_URI, a private state folder, and the tmp dir as cwd."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # Undelivered runs are handed over in the state folder (tracking.handover): keep it private.
    monkeypatch.setenv("GLAMHPC_STATE_DIR", str(tmp_path / "state"))
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


SWEEP_LRS = (1e-4, 1e-3)
SWEEP_SEEDS = (1, 2)
SWEEP_UPDATES = 30
FRAMES_PER_UPDATE = 1280


def _success(lr: float, seed: int, update: int) -> float:
    """A plausible learning curve: the larger lr learns faster; seeds differ a little."""
    import math

    rate = 0.25 if lr > 5e-4 else 0.1
    noise = 0.04 * math.sin(update * (seed + 1.3))
    return max(0.0, min(1.0, 1 - math.exp(-rate * update) * 0.95 + noise - 0.05))


@pytest.fixture(scope="session")
def sweep_2x2(
    _sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str, list[str]]:
    """A local 2 lr x 2 seed sweep logged through the Tracker: (uri, parent id, child ids).

    Session-scoped (built once, ~2 s); tests may add artifacts but must not change its runs.
    """
    from glamhpc.config import load_config, to_dict
    from glamhpc.tracking import Tracker, create_parent_run, finalize_parent, sweep_tags

    root = tmp_path_factory.mktemp("sweep")
    shutil.copy(_sqlite_template, root / "mlflow.db")
    sqlite_uri = f"sqlite:///{root / 'mlflow.db'}"

    parent = create_parent_run(
        "sweep", "lr-x-seed", sqlite_uri, {"ppo.lr": list(SWEEP_LRS), "seed": list(SWEEP_SEEDS)}
    )
    children = []
    for lr in SWEEP_LRS:
        for seed in SWEEP_SEEDS:
            name = f"lr{lr:g}-seed{seed}"
            config = to_dict(load_config(None, [f"ppo.lr={lr}", f"seed={seed}"]))
            with Tracker.start(
                root / "runs" / "sweep" / name,
                config,
                "sweep",
                sqlite_uri,
                name,
                # As glamhpc.launch.sweep tags its children (sweep.index is unique per child).
                {**sweep_tags({"ppo.lr": lr, "seed": seed}), "sweep.index": str(len(children))},
                parent_run_id=parent,
            ) as tracker:
                for update in range(1, SWEEP_UPDATES + 1):
                    metrics = {
                        "success_rate": _success(lr, seed, update),
                        "env_steps_per_s": 400.0 + 10 * seed,
                    }
                    tracker.log_metrics(metrics, step=update * FRAMES_PER_UPDATE)
            children.append(tracker.run_id or "")
    finalize_parent(parent, "FINISHED", sqlite_uri)
    return sqlite_uri, parent, children
