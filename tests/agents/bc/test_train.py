"""`agent: bc` end to end on tiny-t5: tracked training, the GLAM-format export that `glamhpc eval`
scores, bit-exact resume mid-epoch, one-line refusals of a wrong dataset, `bot:N` datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from glamhpc.agents import train_agent
from glamhpc.agents.bc.dataset import DatasetError, validate
from glamhpc.cli import app
from glamhpc.config import load_config

LEVEL = "BabyAI-GoToRedBallNoDists-v0"
runner = CliRunner()
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bc") / "demos"
    args = ["demos", "--agent", "bot", "--level", LEVEL, "--episodes", "8", "--num-envs", "4"]
    result = runner.invoke(app, [*args, "--history", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _cfg(tmp_path: Path, dataset: Path | str, *extra: str):
    return load_config(
        None,
        [
            "agent=bc",
            f"bc.dataset={dataset}",
            f"env.level={LEVEL}",
            "env.num_envs=2",
            "env.history=1",
            "model.device=cpu",
            "bc.batch_size=8",
            "bc.lr=3e-3",
            "bc.warmup_steps=2",
            "bc.eval_every=2",
            "bc.eval_steps=4",
            "train.checkpoint_every=1",
            "train.keep_checkpoints=10",
            "train.progress=false",
            "train.threads=1",
            f"train.run_root={tmp_path / 'runs'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            *extra,
        ],
    )


def _weights(run_dir: Path, update: int) -> dict[str, torch.Tensor]:
    folder = run_dir / "checkpoints" / f"u{update:07d}"
    return {
        **load_file(str(folder / "model.safetensors")),
        **{f"optim.{k}": v for k, v in _optim(folder).items()},
    }


def _optim(folder: Path) -> dict[str, torch.Tensor]:
    state = torch.load(folder / "optimizer.pt", weights_only=True)["state"]
    return {f"{i}.{k}": v for i, s in state.items() for k, v in s.items()}


def _history(run_dir: Path) -> list[dict]:
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    state = json.loads((run_dir / "checkpoints" / latest / "state.json").read_text())
    timing = ("_per_s", "time/")
    return [
        {k: v for k, v in h.items() if not any(t in k for t in timing)} for h in state["history"]
    ]


def test_tracked_run_exports_a_model_that_glamhpc_eval_scores(tmp_path, demos):
    from mlflow.tracking import MlflowClient

    rows = validate(demos).rows
    run_dir = train_agent(_cfg(tmp_path, demos, "train.max_updates=4"), "tracked")
    assert (run_dir / "DONE").read_text().strip() == str(4 * 8)
    meta = json.loads((run_dir / "model" / "glamhpc.json").read_text())
    assert meta["scoring"] == "glam" and meta["history"] == 1 and meta["level"] == LEVEL
    assert json.loads((run_dir / "logs" / "progress.json").read_text())["updates"] == min(
        4, -(-rows // 8)
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert run.data.params["agent"] == "bc"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [8, 16, 24, 32]
    assert losses[-1].value < losses[0].value
    assert {m.step for m in client.get_metric_history(run.info.run_id, "token_accuracy")} == {
        8,
        16,
        24,
        32,
    }
    # The quick evaluation every bc.eval_every updates, under GLAM's key and frames axis.
    success = client.get_metric_history(run.info.run_id, "Main/success_rate")
    assert {m.step for m in success} <= {16, 32}
    assert all(0.0 <= m.value <= 1.0 for m in success)
    result = runner.invoke(
        app,
        ["eval", "--checkpoint", str(run_dir), "-e", "4", "--num-envs", "2", "--no-track"],
    )
    assert result.exit_code == 0, result.output
    assert "GoToRedBallNoDists" in result.output
    csv = next((run_dir / "eval").rglob("results.csv")).read_text()
    assert "GoToRedBallNoDists" in csv
    # The trained agent's own trajectories, as a dataset (the paper's BC on GFlan-T5 runs).
    out = tmp_path / "agent-demos"
    args = ["demos", "--agent", str(run_dir), "--episodes", "2", "--num-envs", "2"]
    recorded = runner.invoke(app, [*args, "--all-episodes", "--out", str(out)])
    assert recorded.exit_code == 0, recorded.output
    manifest = validate(out)
    assert manifest.source == f"run:{run_dir / 'model'}" and manifest.level == LEVEL
    assert manifest.history == 1 and manifest.episodes == manifest.kept_episodes == 2
    assert manifest.rows >= 2 and not manifest.only_success


def test_resume_mid_epoch_is_bitwise_identical(tmp_path, demos):
    cfg = _cfg(tmp_path, demos, "bc.epochs=2", "train.max_updates=7", "tracking.enabled=false")
    straight = train_agent(cfg, "straight")
    # A stop after update 3 (mid-epoch: 8-pair batches over more than 24 pairs): the run dir
    # as it was then, with that checkpoint as latest, then the same command again.
    resumed = straight.parent / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copyfile(straight / "config.yaml", resumed / "config.yaml")
    shutil.copytree(straight / "checkpoints" / "u0000003", resumed / "checkpoints" / "u0000003")
    (resumed / "checkpoints" / "latest").write_text("u0000003\n")
    assert train_agent(cfg, "resumed") == resumed
    a, b = _weights(straight, 7), _weights(resumed, 7)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _history(straight) == _history(resumed)
    # Four updates later the weights did move (the comparison can fail).
    before = _weights(straight, 3)
    assert any(not torch.equal(before[k], a[k]) for k in a if not k.startswith("optim."))
    # Another seed shuffles (and evaluates) differently.
    other = train_agent(
        _cfg(
            tmp_path,
            demos,
            "seed=2",
            "train.max_updates=7",
            "bc.epochs=2",
            "tracking.enabled=false",
        ),
        "seed2",
    )
    c = _weights(other, 7)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_a_dataset_recorded_for_other_prompts_is_refused_in_one_line(tmp_path, demos):
    with pytest.raises(DatasetError, match="history=1 but the run uses 2"):
        train_agent(_cfg(tmp_path, demos, "env.history=2", "tracking.enabled=false"), "h2")
    args = ["train", "--set", "agent=bc", "--set", f"bc.dataset={tmp_path / 'none'}"]
    args += ["--set", f"train.run_root={tmp_path / 'runs'}", "--set", "tracking.enabled=false"]
    args += ["--set", "model.device=cpu", "--run-name", "missing"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_bot_dataset_is_written_into_the_run_once(tmp_path):
    cfg = _cfg(tmp_path, "bot:3", "train.max_updates=1", "tracking.enabled=false")
    run_dir = train_agent(cfg, "bot")
    manifest = validate(run_dir / "demos")
    assert manifest.source == "bot" and manifest.episodes == 3 and manifest.history == 1
    assert manifest.level == LEVEL and manifest.seed == cfg.seed
    assert (run_dir / "DONE").is_file()
