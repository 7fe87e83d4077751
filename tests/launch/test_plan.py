"""The launch plan's capacity side and `glamhpc plan`: real parameter counts from configs (meta
device), memory rules, refusals."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.config import load_config
from glamhpc.launch.plan import check_capacity, model_shape

SIZES = {"small": 77.0, "base": 247.6, "large": 783.2, "xl": 2849.8}


@pytest.mark.parametrize(("size", "millions"), SIZES.items())
def test_real_parameter_counts(size, millions):
    params, _ = model_shape(f"google/flan-t5-{size}")
    assert round(params / 1e6, 1) == millions


def _cfg(size: str, *extra: str):
    return load_config(f"configs/glam-flan-t5-{size}.yaml", list(extra))


def test_xl_ddp_fp32_needs_16_bytes_per_param_and_is_refused_with_the_fix():
    capacity = check_capacity(
        _cfg("xl", "dist.strategy=ddp", "model.dtype=fp32"), 1, 1, gpu_mem_gb=40
    )
    static = capacity.memory.weights_gb + capacity.memory.grads_gb + capacity.memory.optimizer_gb
    assert static == pytest.approx(2849.8e6 * 16 / 1e9, rel=1e-3)  # ~46 GB
    assert not capacity.feasible
    assert "dist.strategy=fsdp" in capacity.problems[0] and "model.lora" in capacity.problems[0]


def test_fsdp_shards_state_over_ranks():
    one = check_capacity(_cfg("xl", "dist.strategy=fsdp"), 1, 4).memory
    two = check_capacity(_cfg("xl", "dist.strategy=fsdp"), 2, 4).memory
    assert two.optimizer_gb == pytest.approx(one.optimizer_gb / 2)
    assert check_capacity(_cfg("xl"), 1, 4).feasible


def test_lora_trains_a_small_fraction():
    capacity = check_capacity(_cfg("xl", "dist.strategy=ddp", "model.lora.enabled=true"), 1, 1)
    assert capacity.memory.trainable < 0.05 * capacity.memory.params
    assert capacity.feasible


def test_env_shards_must_divide():
    capacity = check_capacity(_cfg("small", "env.num_envs=30"), 1, 4)
    assert any("does not divide" in p for p in capacity.problems)
    ok = check_capacity(_cfg("small"), 2, 4)
    assert [r.env_start for r in ok.ranks] == [0, 4, 8, 12, 16, 20, 24, 28]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("gpus", [1, 4, 8])
def test_cli_answers_for_every_size_and_gpu_count(size, gpus):
    result = CliRunner().invoke(
        app, ["plan", f"configs/glam-flan-t5-{size}.yaml", "--gpus-per-node", str(gpus)]
    )
    assert "parameters" in result.output
    assert result.exit_code in (0, 2)
    if result.exit_code:
        assert "error:" in result.output and "Traceback" not in result.output


def test_cli_refuses_infeasible():
    result = CliRunner().invoke(
        app,
        [
            "plan",
            "configs/glam-flan-t5-xl.yaml",
            "--set",
            "dist.strategy=ddp",
            "--set",
            "model.dtype=fp32",
            "--gpu-mem-gb",
            "40",
        ],
    )
    assert result.exit_code == 2
    assert "needs ~" in result.output
