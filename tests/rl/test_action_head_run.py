"""NPAE (`model.init=embeddings_only`, `policy.head=action`) through the real trainer: it updates,
resumes bit for bit, 2 gloo ranks equal 1, and `glamhpc eval` plays its export with its head."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.config import load_config
from glamhpc.envs.suites import SuiteItem
from glamhpc.evaluate.agents import checkpoint_spec, load_agent
from glamhpc.policy.models import load_model
from glamhpc.rl.build import build_policy
from glamhpc.rl.trainer import train

NPAE = [
    "env.level=BabyAI-GoToRedBallNoDists-v0",
    "env.num_envs=4",
    "env.history=1",
    "ppo.steps_per_env=4",
    "ppo.minibatch_size=8",
    "ppo.epochs=1",
    "ppo.lr=1e-3",
    "model.value_hidden=32",
    "model.init=embeddings_only",
    "policy.head=action",
    "train.progress=false",
    "train.checkpoint_every=1",
    "train.save_initial=true",
    "train.keep_checkpoints=10",
    "train.threads=1",
    "tracking.enabled=false",
    "model.device=cpu",
]

pytestmark = pytest.mark.timeout(300)


def _cfg(root: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(None, [*NPAE, f"train.run_root={root}", *extra])


def _weights(run_dir: Path, update: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / f"u{update:07d}" / "model.safetensors"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("npae")
    return train(_cfg(root, "train.max_updates=3"), "straight")


def test_training_updates_the_head_and_the_llm_but_not_the_unused_lm_head(straight: Path) -> None:
    start, end = _weights(straight, 0), _weights(straight, 3)
    heads = [k for k in start if k.startswith("action_head.")]
    assert len(heads) == 6  # 3 linear layers, weight and bias
    # The tied embedding matrix is saved once, under the decoder's name.
    embeddings = "model.decoder.embed_tokens."
    for prefix in ("action_head.", "value_head.", embeddings, "model.encoder.block.0."):
        keys = [k for k in start if k.startswith(prefix)]
        assert keys and any(not torch.equal(start[k], end[k]) for k in keys), prefix
    assert torch.equal(start["model.lm_head.weight"], end["model.lm_head.weight"])  # frozen
    assert all(bool(torch.isfinite(t).all()) for t in end.values())
    export = straight / "model"
    assert (export / "action_head.safetensors").is_file()
    exported = load_file(str(export / "action_head.safetensors"))
    assert all(torch.equal(exported[k.removeprefix("action_head.")], end[k]) for k in heads)


def test_interrupted_run_resumes_bitwise(straight: Path, tmp_path: Path) -> None:
    train(_cfg(tmp_path, "train.max_updates=1"), "resumed")
    resumed = tmp_path / "quickstart" / "resumed"
    (resumed / "DONE").unlink()  # as if stopped after update 1: the next call resumes
    train(_cfg(tmp_path, "train.max_updates=3"), "resumed")
    a, b = _weights(straight, 3), _weights(resumed, 3)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs"


def test_ddp_two_gloo_ranks_equal_one_rank(straight: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "glamhpc", "train", "--run-name", "ddp", "--nproc", "2"]
    for item in [*NPAE, f"train.run_root={tmp_path}", "train.max_updates=2"]:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = tmp_path / "quickstart" / "ddp"
    for update in (1, 2):
        one, two = _weights(straight, update), _weights(ddp, update)
        assert one.keys() == two.keys()
        # All-reduce sums gradients in another order: equal to fp32 rounding, not bit for bit.
        worst = max((one[k] - two[k]).abs().max().item() for k in one)
        assert worst <= 1e-5, worst
        assert any(not torch.equal(_weights(straight, 0)[k], two[k]) for k in one if "action" in k)


def test_eval_plays_the_export_with_its_trained_action_head(straight: Path, tmp_path: Path) -> None:
    spec = checkpoint_spec(straight)
    agent = load_agent(spec)
    assert agent.action_head is not None
    item = SuiteItem("GoToRedBallNoDists", "BabyAI-GoToRedBallNoDists-v0")
    from glamhpc.envs.actions import action_texts

    texts = action_texts("standard", "english")
    scorer = agent.policy_for(texts, item)
    # The trained policy, rebuilt from the run's config and its last checkpoint.
    cfg = load_config(straight / "config.yaml")
    model, tok = load_model("tiny-t5", init="pretrained")
    trained = build_policy(cfg, model, tok, list(texts), torch.device("cpu"))
    missing, unexpected = trained.load_state_dict(_weights(straight, 3), strict=False)
    assert not unexpected and set(missing) <= {
        "model.shared.weight",
        "model.encoder.embed_tokens.weight",
    }
    prompt = [
        "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle"
        " \n Goal of the agent: go to the red ball \n Observation 0: You see a red ball 2 steps"
        " forward, \n Action 0: "
    ]
    with torch.no_grad():
        expected = trained(prompt)[0]
    torch.testing.assert_close(scorer(prompt), expected, rtol=0, atol=1e-6)  # type: ignore[call-arg,operator]

    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        ["eval", "--checkpoint", str(straight), "--level", "GoToRedBallNoDists",
         "--episodes", "4", "--num-envs", "4", "--no-track", "--device", "cpu",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    rows = (out / "GoToRedBallNoDists-seed1" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and ",GoToRedBallNoDists," in rows[1] and ",4," in rows[1], rows
