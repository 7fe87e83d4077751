"""`agent: bc` over 2 real torchrun ranks (gloo, CPU): one rank's run, to fp32 rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from glamhpc.cli import app

LEVEL = "BabyAI-GoToRedBallNoDists-v0"
pytestmark = pytest.mark.timeout(400)


def _train(root: Path, demos: Path, name: str, nproc: int) -> Path:
    cmd = [sys.executable, "-m", "glamhpc", "train", "--run-name", name, "--nproc", str(nproc)]
    for item in [
        "agent=bc",
        f"bc.dataset={demos}",
        f"env.level={LEVEL}",
        "env.num_envs=2",
        "env.history=1",
        "model.device=cpu",
        "bc.batch_size=7",  # odd: rank 0 takes 4 pairs, rank 1 takes 3
        "bc.lr=3e-3",
        "bc.eval_every=3",
        "bc.eval_steps=4",
        "train.max_updates=3",
        "train.progress=false",
        "train.threads=1",
        "tracking.enabled=false",
        f"train.run_root={root}",
    ]:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=360)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root / "quickstart" / name


def test_two_ranks_train_what_one_rank_trains(tmp_path):
    demos = tmp_path / "demos"
    args = ["demos", "--agent", "bot", "--level", LEVEL, "--episodes", "4", "--history", "1"]
    assert CliRunner().invoke(app, [*args, "--out", str(demos)]).exit_code == 0
    one = _train(tmp_path / "runs", demos, "one", 1)
    two = _train(tmp_path / "runs", demos, "two", 2)
    a = load_file(str(one / "checkpoints" / "u0000003" / "model.safetensors"))
    b = load_file(str(two / "checkpoints" / "u0000003" / "model.safetensors"))
    export = load_file(str(one / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    moved = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved <= 1e-5, moved
    common = [k for k in a if k.removeprefix("model.") in export]
    assert common and all(torch.equal(a[k], export[k.removeprefix("model.")]) for k in common)
    ha, hb = (
        json.loads((r / "checkpoints" / "u0000003" / "state.json").read_text())["history"]
        for r in (one, two)
    )
    assert [h["frames"] for h in ha] == [h["frames"] for h in hb] == [7, 14, 21]
    for x, y in zip(ha, hb, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["token_accuracy"] == y["token_accuracy"]
