"""The paper's experiments as shipped sweep files (configs/paper/): each passes
`glamhpc sweep FILE --dry-run` through the real CLI, and each does what its header says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from glamhpc.config import load_config
from glamhpc.envs.actions import get_action_space
from glamhpc.launch.sweep import SweepPlan, plan_sweep
from glamhpc.launch.sweep_file import load_sweep

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "configs" / "paper"
PARITY = PAPER / "glam-flan-t5-large-mixed.yaml"
SWEEPS = sorted((PAPER / "sweeps").glob("*.yaml"))


def test_every_file_under_configs_paper_is_a_config_or_a_sweep() -> None:
    # Plain configs sit in configs/paper/ (test_smoke.py runs `train --smoke` on them), sweeps in
    # configs/paper/sweeps/ (dry-run below): a file anywhere else would be checked by neither.
    files = sorted(p for p in PAPER.rglob("*") if p.is_file())
    assert files == sorted([*PAPER.glob("*.yaml"), *SWEEPS])
    assert {p.stem for p in SWEEPS} == {"main", "size", "action-space", "distractors", "history"}


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.stem)
def test_paper_sweep_passes_dry_run(tmp_path: Path, sweep: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLAMHPC_STATE_DIR": str(tmp_path / ".state")}
    out = subprocess.run(
        [sys.executable, "-m", "glamhpc", "sweep", str(sweep), "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    spec = load_sweep(sweep)
    assert f"sweep        {spec.name} (" in out.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name != ".state"] == []  # nothing written


def test_parity_config_is_the_campaign() -> None:
    cfg = load_config(PARITY)
    assert (cfg.policy.scoring, cfg.env.task_sampling) == ("paper", "per_instance")
    assert (cfg.model.name, cfg.model.precision, cfg.model.dtype) == (
        "google/flan-t5-large",
        "fp32",
        "fp32",
    )
    assert cfg.env.level == "BabyAI-MixedTrainLocal-v0"
    assert (cfg.env.num_envs, cfg.ppo.steps_per_env, cfg.env.history) == (32, 40, 3)
    ppo = cfg.ppo
    assert (ppo.total_frames, ppo.lr, ppo.adam_eps, ppo.epochs, ppo.minibatch_size) == (
        1_500_000,
        1e-6,
        1e-5,
        4,
        64,
    )
    assert (ppo.gamma, ppo.gae_lambda, ppo.clip, ppo.entropy_coef, ppo.max_grad_norm) == (
        0.99,
        0.99,
        0.2,
        0.01,
        0.5,
    )
    assert ppo.value_coef == 0.5 and ppo.clip_value and not ppo.normalize_advantages
    assert cfg.env.reward_scale == 20 and not cfg.env.fix_grammar


def _plan(name: str, tmp_path: Path) -> SweepPlan:
    plan = plan_sweep(load_sweep(PAPER / "sweeps" / f"{name}.yaml"), workdir=tmp_path)
    for cfg in plan.configs:  # every element is the parity run but for what the sweep varies
        assert (cfg.policy.scoring, cfg.env.task_sampling) == ("paper", "per_instance")
        assert cfg.experiment == f"paper-{name}"
    # 2 seeds of every setting, as the paper's campaign arrays (--array=1-2).
    settings = {
        tuple(sorted((k, str(v)) for k, v in e.values.items() if k != "seed"))
        for e in plan.elements
    }
    assert len(plan.elements) == 2 * len(settings)
    assert sorted({e.values["seed"] for e in plan.elements}) == [1, 2]
    return plan


def test_size_study_is_small_large_xl_on_gotolocal_400k(tmp_path: Path) -> None:
    plan = _plan("size", tmp_path)
    assert [c.model.name.removeprefix("google/flan-t5-") for c in plan.configs[::2]] == [
        "small",
        "large",
        "xl",
    ]
    assert {(c.env.level, c.ppo.total_frames) for c in plan.configs} == {
        ("BabyAI-GoToLocal-v0", 400_000)
    }
    assert [c.dist.strategy for c in plan.configs[::2]] == ["ddp", "ddp", "fsdp"]
    assert plan.resources.nproc_per_node == 4


def test_action_space_is_3_6_9_on_gotolocal(tmp_path: Path) -> None:
    plan = _plan("action-space", tmp_path)
    sizes = [len(get_action_space(c.env.action_space)) for c in plan.configs[::2]]
    assert sizes == [3, 6, 9]
    assert {c.env.level for c in plan.configs} == {"BabyAI-GoToLocal-v0"}


def test_distractors_are_trained_per_count(tmp_path: Path) -> None:
    plan = _plan("distractors", tmp_path)
    assert [c.env.level for c in plan.configs[::2]] == [
        "BabyAI-GoToLocalS8N4-v0",
        "BabyAI-GoToLocal-v0",  # minigrid's GoToLocal is S8N8
        "BabyAI-GoToLocalS8N16-v0",
    ]


def test_history_is_1_3_6_9(tmp_path: Path) -> None:
    plan = _plan("history", tmp_path)
    assert [c.env.history for c in plan.configs[::2]] == [1, 3, 6, 9]


def test_main_run_is_the_parity_config_twice(tmp_path: Path) -> None:
    plan = _plan("main", tmp_path)
    parity = load_config(PARITY)
    for cfg in plan.configs:
        assert cfg.ppo == parity.ppo and cfg.env == parity.env and cfg.model == parity.model
