"""Symbolic-PPO end to end: `glamhpc train`'s entry on real envs with a real SQLite MLflow store,
bitwise resume, one-line refusals, and `glamhpc eval` of the finished run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glamhpc.agents import train_agent
from glamhpc.agents.symbolic.trainer import setup_problem
from glamhpc.agents.symbolic.vocab import VOCAB_FILE, load_vocab
from glamhpc.config import Config, load_config

TINY = [
    "agent=symbolic",
    "env.level=BabyAI-GoToRedBallNoDists-v0",
    "env.num_envs=2",
    "ppo.steps_per_env=20",
    "ppo.minibatch_size=20",
    "ppo.epochs=2",
    "ppo.lr=1e-3",
    "symbolic.recurrence=10",
    "symbolic.image_dim=16",
    "symbolic.memory_dim=8",
    "symbolic.instr_dim=8",
    "train.progress=false",
    "train.checkpoint_every=1",
    "train.threads=1",
    "model.device=cpu",
]


def _cfg(root: Path, *extra: str) -> Config:
    return load_config(
        None,
        [*TINY, f"train.run_root={root / 'runs'}", f"tracking.uri=sqlite:///{root / 'ml.db'}",
         *extra],
    )  # fmt: skip


def _latest(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()


def _state(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict, list[dict]]:
    folder = _latest(run_dir)
    optim = torch.load(folder / "optimizer.pt", weights_only=True)
    history = json.loads((folder / "state.json").read_text())["history"]
    return load_file(str(folder / "model.safetensors")), optim, history


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 updates in one go (80 frames per env: every 64-step episode ends at least once)."""
    root = tmp_path_factory.mktemp("straight")
    return train_agent(_cfg(root, "train.max_updates=4"), "s")


def test_a_run_trains_exports_and_is_tracked(straight: Path) -> None:
    import mlflow

    assert (straight / "DONE").read_text().strip() == "160"
    model = straight / "model"
    assert {p.name for p in model.iterdir()} == {
        "symbolic.safetensors", VOCAB_FILE, "glamhpc.json", "MANIFEST.json"
    }  # fmt: skip
    meta = json.loads((model / "glamhpc.json").read_text())
    assert meta["agent"] == "symbolic" and meta["arch"]["num_actions"] == 6
    assert load_vocab(model / VOCAB_FILE) == load_vocab(straight / VOCAB_FILE)
    weights = load_file(str(model / "symbolic.safetensors"))
    assert "memory" not in weights and "films.0.bn1.running_mean" in weights
    client = mlflow.tracking.MlflowClient(f"sqlite:///{straight.parents[2] / 'ml.db'}")
    run_id = (straight / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["agent"] == "symbolic"
    steps = [m.step for m in client.get_metric_history(run_id, "policy_loss")]
    assert steps == [40, 80, 120, 160]  # frames, as GLAM's curves
    assert client.get_metric_history(run_id, "Main/success_rate")  # episodes ended
    progress = json.loads((straight / "logs" / "progress.json").read_text())
    assert progress["update"] == 4 and progress["frames"] == 160


def test_resume_is_bitwise_exact(straight: Path, tmp_path: Path) -> None:
    """2 updates, a new process-level start from the checkpoint, 2 more == 4 straight."""
    cfg2 = _cfg(tmp_path, "train.max_updates=2", "tracking.enabled=false")
    run = train_agent(cfg2, "r")
    assert (run / "DONE").read_text().strip() == "80"
    (run / "DONE").unlink()  # reaching max_updates finished it: continue it as a requeue would
    train_agent(_cfg(tmp_path, "train.max_updates=4", "tracking.enabled=false"), "r")
    model, optim, history = _state(straight)
    model2, optim2, history2 = _state(run)
    assert model.keys() == model2.keys() and "memory" in model  # env memories are checkpointed
    assert all(torch.equal(model[k], model2[k]) for k in model)
    assert all(
        torch.equal(a, b)
        for s, s2 in zip(optim["state"].values(), optim2["state"].values(), strict=True)
        for a, b in zip(s.values(), s2.values(), strict=True)
    )
    timing = ("time/", "env_steps_per_s")
    strip = [{k: v for k, v in h.items() if not k.startswith(timing)} for h in history]
    strip2 = [{k: v for k, v in h.items() if not k.startswith(timing)} for h in history2]
    assert strip == strip2


def test_another_seed_gives_another_run(tmp_path: Path) -> None:
    run = train_agent(_cfg(tmp_path, "train.max_updates=1", "tracking.enabled=false", "seed=2"))
    first = _state(run)[2][0]
    again = train_agent(
        _cfg(tmp_path, "train.max_updates=1", "tracking.enabled=false", "seed=2"), "again"
    )
    assert _state(again)[2][0]["policy_loss"] == first["policy_loss"]  # same seed, same result
    other = train_agent(_cfg(tmp_path, "train.max_updates=1", "tracking.enabled=false"), "seed1")
    assert _state(other)[2][0]["policy_loss"] != first["policy_loss"]


def test_setup_problems_are_one_line() -> None:
    cfg = load_config(None, TINY)
    assert setup_problem(cfg, 1) is None
    assert "one rank" in str(setup_problem(cfg, 2))
    bad = load_config(None, [*TINY, "ppo.steps_per_env=25"])
    assert "multiple" in str(setup_problem(bad, 1))


def test_several_ranks_are_refused_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    sets = [a for item in TINY for a in ("--set", item)]
    out = subprocess.run(
        [sys.executable, "-m", "glamhpc", "train", *sets, "--set", f"train.run_root={tmp_path}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1 and "one rank" in lines[0] and "Traceback" not in out.stderr


def test_glamhpc_eval_plays_the_checkpoint(straight: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "glamhpc", "eval", "--checkpoint", str(straight), "--episodes",
         "6", "--num-envs", "3", "--no-track", "--device", "cpu", "--out", str(tmp_path / "ev"),
         "--level", "GoToRedBallNoDists", "--suite", "synonym_actions"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "GoToRedBallNoDists" in out.stdout and "synonym_actions" in out.stdout, out.stdout
