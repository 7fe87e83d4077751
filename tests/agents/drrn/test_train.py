"""DRRN end to end: `glamhpc train` with a real SQLite MLflow store, bitwise resume (replay
memory included), a stop signal, one rank only, and `glamhpc eval` of the export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glamhpc.agents import train_agent
from glamhpc.agents.drrn.trainer import DRRNRun
from glamhpc.config import Config, ConfigError, load_config
from glamhpc.rl.signals import SignalFlag

TINY = [
    "agent=drrn",
    "env.level=BabyAI-GoToRedBallNoDists-v0",
    "env.num_envs=2",
    "env.history=1",
    "ppo.steps_per_env=4",
    "ppo.minibatch_size=4",
    "ppo.lr=1e-3",
    "ppo.gamma=0.9",
    "drrn.hidden=8",
    "drrn.grad_steps=2",
    "drrn.priority_fraction=0.5",
    "train.progress=false",
    "train.checkpoint_every=1",
    "train.keep_checkpoints=10",
    "model.device=cpu",
]
#: Varies between runs of the same update: not part of what must be identical.
TIMING = ("env_steps_per_s", "time/rollout_s", "time/update_s")


def _cfg(tmp_path: Path, *extra: str) -> Config:
    return load_config(
        None, [*TINY, f"train.run_root={tmp_path / 'runs'}", "tracking.enabled=false", *extra]
    )


def _checkpoint(run_dir: Path, update: int) -> Path:
    return run_dir / "checkpoints" / f"u{update:07d}"


def _same_checkpoint(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "replay.safetensors"):
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x), name
    ox = torch.load(a / "optimizer.pt", weights_only=True)
    oy = torch.load(b / "optimizer.pt", weights_only=True)
    for i, state in ox["state"].items():
        assert all(torch.equal(v, oy["state"][i][k]) for k, v in state.items())
    assert json.loads((a / "rank00000.json").read_text()) == json.loads(
        (b / "rank00000.json").read_text()
    )
    hx, hy = (json.loads((c / "state.json").read_text())["history"] for c in (a, b))
    assert [{k: v for k, v in h.items() if k not in TIMING} for h in hx] == [
        {k: v for k, v in h.items() if k not in TIMING} for h in hy
    ]


def test_resume_is_bitwise_exact_with_the_replay_memory(tmp_path: Path) -> None:
    straight = train_agent(_cfg(tmp_path, "train.max_updates=4"), "straight")
    part = train_agent(_cfg(tmp_path, "train.max_updates=2"), "resumed")
    assert (part / "DONE").read_text().strip() == "16"
    (part / "DONE").unlink()  # max_updates reached counts as finished: continue it to 4
    train_agent(_cfg(tmp_path, "train.max_updates=4"), "resumed")
    _same_checkpoint(_checkpoint(straight, 4), _checkpoint(part, 4))
    replay = load_file(str(_checkpoint(straight, 4) / "replay.safetensors"))
    assert replay["rest.action"].numel() + replay["priority.action"].numel() == 32
    history = json.loads((_checkpoint(straight, 4) / "state.json").read_text())["history"]
    assert [h["grad_steps"] for h in history] == [2.0] * 4  # it learned every update
    assert (straight / "tokenizer.json").is_file()
    # Another seed, other weights: the run is keyed by its seed.
    other = train_agent(_cfg(tmp_path, "train.max_updates=1", "seed=2"), "other")
    w1 = load_file(str(_checkpoint(straight, 1) / "model.safetensors"))
    w2 = load_file(str(_checkpoint(other, 1) / "model.safetensors"))
    assert not torch.equal(w1["hidden.weight"], w2["hidden.weight"])


def test_a_stop_signal_saves_marks_preempted_and_the_run_resumes(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "train.max_updates=2")
    flag = SignalFlag()
    flag.received = signal.SIGUSR2  # as Slurm's pre-timeout signal would
    run_dir = DRRNRun(cfg, "stopped").run(flag)
    assert (run_dir / "PREEMPTED").read_text().strip() == "0"
    assert _checkpoint(run_dir, 0).is_dir() and not (run_dir / "DONE").exists()
    train_agent(cfg, "stopped")
    assert (run_dir / "DONE").read_text().strip() == "16"
    assert (run_dir / "model" / "drrn.safetensors").is_file()


def test_more_than_one_rank_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"agent=drrn trains on one rank, not 2") as err:
        train_agent(_cfg(tmp_path), "two")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists()


def _glamhpc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLAMHPC_STATE_DIR": str(cwd / ".state")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "glamhpc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_trains_tracks_in_mlflow_and_eval_plays_the_export(
    tmp_path: Path, sqlite_uri: str
) -> None:
    from mlflow import MlflowClient

    sets = [a for s in TINY for a in ("--set", s)]
    # 17 updates of 4 steps: every env ends an episode (64-step limit), so success is logged.
    out = _glamhpc(
        tmp_path, "train", *sets, "--set", "train.max_updates=17", "--set",
        f"tracking.uri={sqlite_uri}", "--run-name", "cli",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "update 17/17 frames 136" in out.stdout
    run_dir = tmp_path / "runs" / "quickstart" / "cli"
    assert json.loads((run_dir / "logs" / "progress.json").read_text())["update"] == 17
    client = MlflowClient(tracking_uri=sqlite_uri)
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED" and run.data.tags["agent"] == "drrn"
    assert run.data.params["agent"] == "drrn" and run.data.params["drrn.hidden"] == "8"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "td_loss")]
    assert steps == list(range(8, 137, 8))  # frames are the step, as GLAM's
    assert client.get_metric_history(run.info.run_id, "Main/success_rate")
    meta = json.loads((run_dir / "model" / "glamhpc.json").read_text())
    assert meta["agent"] == "drrn" and meta["frames"] == 136

    out = _glamhpc(
        tmp_path, "eval", "--checkpoint", str(run_dir), "--episodes", "4", "--num-envs", "2",
        "--out", str(tmp_path / "eval"), "--no-track",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = (tmp_path / "eval").rglob("results.csv")
    text = next(rows).read_text()
    assert "cli" in text and "GoToRedBallNoDists" in text
