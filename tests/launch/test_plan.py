"""The launch plan's capacity side and `glamhpc plan`: real parameter counts from configs (meta
device), memory rules, refusals."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.config import load_config
from glamhpc.launch.plan import check_capacity, estimate_memory, model_shape, value_head_params

SIZES = {"small": 77.0, "base": 247.6, "large": 783.2, "xl": 2849.8}


@pytest.mark.parametrize(("size", "millions"), SIZES.items())
def test_real_parameter_counts(size, millions):
    params, _ = model_shape(f"google/flan-t5-{size}")
    assert round(params / 1e6, 1) == millions


def _cfg(size: str, *extra: str):
    return load_config(f"configs/glam-flan-t5-{size}.yaml", list(extra))


def test_xl_ddp_fp32_needs_16_bytes_per_param_and_is_refused_with_the_fix():
    # The shipped config is bf16-mixed now: ask for fp32 to keep this the fp32 case.
    capacity = check_capacity(
        _cfg("xl", "dist.strategy=ddp", "model.dtype=fp32", "model.precision=fp32"),
        1,
        1,
        gpu_mem_gb=40,
    )
    static = capacity.memory.weights_gb + capacity.memory.grads_gb + capacity.memory.optimizer_gb
    assert static == pytest.approx(capacity.memory.trainable * 16 / 1e9)  # ~46 GB
    params, _ = model_shape("google/flan-t5-xl")
    assert capacity.memory.trainable == params + value_head_params(2048, 1024)
    assert not capacity.feasible
    assert "dist.strategy=fsdp" in capacity.problems[0] and "model.lora" in capacity.problems[0]


def test_bf16_mixed_keeps_fp32_master_weights_grads_and_adam():
    fp32 = check_capacity(_cfg("large", "model.precision=fp32"), 1, 1).memory
    mixed = check_capacity(_cfg("large", "model.precision=bf16-mixed"), 1, 1).memory
    params = fp32.trainable  # the LLM and its value head
    assert fp32.grads_gb == mixed.grads_gb == pytest.approx(params * 4 / 1e9)
    assert fp32.optimizer_gb == mixed.optimizer_gb == pytest.approx(params * 8 / 1e9)
    # Held: fp32 weights in both. In flight: the bf16 copies autocast makes and autograd keeps
    # for backward, freed with the minibatch (a working buffer, not held after the update).
    assert fp32.weights_gb == mixed.weights_gb == pytest.approx(params * 4 / 1e9)
    assert fp32.buffers_gb == 0
    assert mixed.buffers_gb == pytest.approx(mixed.params * 2 / 1e9)
    assert mixed.activations_gb == pytest.approx(fp32.activations_gb / 2)


def test_fsdp_bf16_mixed_shards_fp32_and_gathers_bf16_blocks():
    params, shape = model_shape("google/flan-t5-xl")
    fp32 = check_capacity(_cfg("xl", "model.precision=fp32"), 1, 4).memory
    mixed = check_capacity(_cfg("xl"), 1, 4).memory  # the shipped config: bf16-mixed
    two_blocks = params / shape.layers * 2
    trainable = params + value_head_params(shape.d_model, 1024)
    assert mixed.weights_gb == fp32.weights_gb == pytest.approx(trainable * 4 / 4 / 1e9)
    assert mixed.buffers_gb == pytest.approx(two_blocks * 2 / 1e9)
    assert fp32.buffers_gb == pytest.approx(two_blocks * 4 / 1e9)
    assert mixed.optimizer_gb == fp32.optimizer_gb


def test_fsdp_shards_state_over_ranks():
    one = check_capacity(_cfg("xl", "dist.strategy=fsdp"), 1, 4).memory
    two = check_capacity(_cfg("xl", "dist.strategy=fsdp"), 2, 4).memory
    assert two.optimizer_gb == pytest.approx(one.optimizer_gb / 2)
    assert check_capacity(_cfg("xl"), 1, 4).feasible


def test_lora_trains_a_small_fraction():
    capacity = check_capacity(_cfg("xl", "dist.strategy=ddp", "model.lora.enabled=true"), 1, 1)
    assert capacity.memory.trainable < 0.05 * capacity.memory.params
    assert capacity.feasible


def test_env_slices_must_divide():
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


def test_cli_refuses_training_bf16_weights_with_the_fix():
    result = CliRunner().invoke(
        app, ["plan", "configs/glam-flan-t5-xl.yaml", "--set", "model.dtype=bf16"]
    )
    assert result.exit_code == 2
    assert "use model.dtype=fp32 with model.precision=bf16-mixed" in result.output


def test_update_health_snapshot_is_one_fp32_copy_of_the_trainable_parameters():
    one = check_capacity(_cfg("large"), 1, 1).memory
    assert one.health_gb == pytest.approx(one.trainable * 4 / 1e9)
    assert one.total_gb == pytest.approx(one.static_gb + one.buffers_gb + one.activations_gb)
    sharded = check_capacity(_cfg("xl"), 1, 4).memory
    assert sharded.health_gb == pytest.approx(sharded.trainable * 4 / 4 / 1e9)


def test_value_head_is_trained_and_counted_with_the_llm():
    """GlamPolicy's value MLP (d_model -> value_hidden -> value_hidden -> 1) is fp32 and trained
    in every mode: on a shrunk model it outweighs the LLM, so the plan must count it."""
    from glamhpc.policy.shapes import tiny_t5_shape

    shape = tiny_t5_shape(2048)
    params = 400_000
    cfg = load_config("configs/quickstart.yaml", ["model.value_hidden=32"])
    memory = estimate_memory(cfg, params, shape, 1)
    head = 64 * 32 + 32 + 32 * 32 + 32 + 32 + 1
    assert value_head_params(64, 32) == head
    assert memory.params == params and memory.trainable == params + head
    assert memory.static_gb == pytest.approx((params + head) * 20 / 1e9)


def test_ddp_over_several_ranks_keeps_gradient_buckets():
    one = estimate_memory(_cfg("base"), *model_shape("google/flan-t5-base"), 1)
    two = estimate_memory(_cfg("base"), *model_shape("google/flan-t5-base"), 2)
    assert one.buffers_gb == 0
    assert two.buffers_gb == pytest.approx(two.trainable * 4 / 1e9)
    assert two.static_gb == one.static_gb  # replicated: the held state does not shrink
