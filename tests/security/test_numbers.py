"""Numbers (issue 12): no inf/NaN, real ranges on every numeric field, a cap on sweep size, and
error messages short enough to read."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from glamhpc.config import ConfigError, describe_fields, load_config
from glamhpc.launch.sweep_file import expand, load_sweep

from .one_line import fails_with_one_line, sandbox, tree

__all__ = ["sandbox"]

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")

#: The inputs the review found accepted (issue 12, "Numbers"), plus their neighbours.
BAD = [
    ("ppo.lr=.inf", "ppo.lr"),
    ("ppo.lr=1e400", "ppo.lr"),
    ("ppo.lr=.nan", "ppo.lr"),
    ("ppo.lr=-1e-4", "ppo.lr"),
    ("env.reward_scale=.inf", "env.reward_scale"),
    ("env.reward_scale=1e300", "env.reward_scale"),
    ("ppo.target_kl=0", "ppo.target_kl"),
    ("ppo.target_kl=-0.01", "ppo.target_kl"),
    ("ppo.target_kl=.nan", "ppo.target_kl"),
    ("ppo.adam_betas=[1.0, 0.999]", "ppo.adam_betas"),
    ("ppo.adam_betas=[0.9, -0.1]", "ppo.adam_betas"),
    ("ppo.adam_betas=[0.9, .nan]", "ppo.adam_betas"),
    ("ppo.adam_eps=.inf", "ppo.adam_eps"),
    ("ppo.clip=5", "ppo.clip"),
    ("ppo.max_grad_norm=.inf", "ppo.max_grad_norm"),
    ("ppo.entropy_coef=.inf", "ppo.entropy_coef"),
    ("seed=-1", "seed"),
    (f"seed={2**63}", "seed"),
    ("env.num_envs=1e9", "env.num_envs"),
    ("eval.num_envs=1000000000", "eval.num_envs"),
    ("ppo.total_frames=1e30", "ppo.total_frames"),
    ("ppo.minibatch_size=1e12", "ppo.minibatch_size"),
    ("launch.nodes=1000000000", "launch.nodes"),
    ("train.peak_tflops=.inf", "train.peak_tflops"),
    ("tracking.retry_max_s=.inf", "tracking.retry_max_s"),
    ("model.lora.dropout=.nan", "model.lora.dropout"),
]


@pytest.mark.parametrize(("override", "key"), BAD)
def test_bad_numbers_are_refused_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert f"'{key}" in message and "\n" not in message and len(message) <= 300


@pytest.mark.parametrize("override", ["ppo.lr=.inf", "seed=-1", "env.num_envs=1e9"])
def test_bad_numbers_stop_every_command_with_one_line(sandbox: Path, override: str) -> None:
    tmp = sandbox.parents[2]
    before = tree(tmp)
    fails_with_one_line("train", "--set", override, "--set", "tracking.enabled=false")
    fails_with_one_line("submit", QUICKSTART, "--dry-run", "--set", override)
    fails_with_one_line("config", "--set", override)
    assert tree(tmp) == before


def test_every_numeric_field_has_an_upper_bound() -> None:
    """A new int/float field without a range is a review finding waiting to happen."""
    from glamhpc.config import Config

    unbounded = []

    def walk(model: type, prefix: str) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, f"{prefix}{name}.")
                continue
            text = str(ann)
            if ("int" in text or "float" in text) and "tuple" not in text:
                bounds = [m for m in field.metadata if hasattr(m, "le") or hasattr(m, "lt")]
                if not bounds:
                    unbounded.append(f"{prefix}{name}")

    walk(Config, "")
    assert unbounded == []
    assert len(describe_fields()) > 50


def test_error_messages_are_cut_to_a_readable_length() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["model.lora.target_modules=" + "[" + ",".join(["1"] * 5000) + "]"])
    assert len(str(info.value)) <= 300
    with pytest.raises(ConfigError) as info:
        load_config(None, ["env.level=" + "x" * 10_000])
    assert len(str(info.value)) <= 300


def _sweep(tmp: Path, grid: str) -> Path:
    path = tmp / "big.yaml"
    path.write_text(f"name: big\nbase: {QUICKSTART}\ngrid:\n{grid}")
    return path


def test_sweep_size_is_capped_with_an_override(tmp_path: Path) -> None:
    # 64 x 32 = 2048 elements: over the default cap of 1024.
    grid = f"  seed: {list(range(64))}\n  ppo.epochs: {list(range(1, 33))}\n"
    spec = load_sweep(_sweep(tmp_path, grid))
    with pytest.raises(ConfigError, match="--max-size"):
        expand(spec)
    assert len(expand(spec, max_size=4096)) == 2048


def test_a_huge_grid_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    # 10 keys x 20 values = 20**10 elements: counted, never enumerated.
    keys = ["seed", "ppo.epochs", "ppo.lr", "ppo.clip", "ppo.gamma", "ppo.gae_lambda"]
    keys += ["ppo.entropy_coef", "ppo.value_coef", "ppo.max_grad_norm", "env.reward_scale"]
    grid = "".join(f"  {k}: {list(range(1, 21))}\n" for k in keys)
    spec = load_sweep(_sweep(tmp_path, grid))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="elements"):
        expand(spec)
    assert time.perf_counter() - start < 1.0


def test_sweep_cli_caps_size(sandbox: Path) -> None:
    tmp = sandbox.parents[2]
    grid = f"  seed: {list(range(64))}\n  ppo.epochs: {list(range(1, 33))}\n"
    path = _sweep(tmp, grid)
    before = tree(tmp)
    line = fails_with_one_line("sweep", str(path), "--dry-run")
    assert "2048" in line and "--max-size" in line
    assert tree(tmp) == before
