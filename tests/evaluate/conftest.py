"""A finished tiny training run (real trainer, real tiny-t5, real SQLite MLflow store), shared by
the evaluation tests of this session."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from glamhpc.config import load_config
from glamhpc.rl.trainer import train
from glamhpc.tracking import read_run_id

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


@dataclass(frozen=True)
class TrainedRun:
    run_dir: Path
    uri: str
    run_id: str


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> TrainedRun:
    """The quickstart config shrunk to one PPO update: a finished run with an exported model."""
    root = tmp_path_factory.mktemp("eval-run")
    db = root / "mlflow.db"
    shutil.copy(_sqlite_template, db)
    uri = f"sqlite:///{db}"
    cfg = load_config(
        QUICKSTART,
        [
            "env.num_envs=4",
            "ppo.steps_per_env=4",
            "ppo.minibatch_size=8",
            "train.max_updates=1",
            "train.progress=false",
            "model.device=cpu",
            f"train.run_root={root / 'runs'}",
            f"tracking.uri={uri}",
        ],
    )
    run_dir = train(cfg, "tiny")
    run_id = read_run_id(run_dir)
    assert run_id is not None and (run_dir / "model" / "glamhpc.json").is_file()
    return TrainedRun(run_dir, uri, run_id)
