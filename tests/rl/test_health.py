"""Update health on hand-made tensors (exact), the group names, and the stalled-LLM warning."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from glamhpc.rl.health import (
    STALLED_FRACTION,
    UpdateHealth,
    group_of,
    health_metrics,
    nonfinite_groups,
    stall_warning,
)


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("model.shared.weight", "embeddings"),
        ("model.lm_head.weight", "embeddings"),
        ("model.encoder.embed_tokens.weight", "embeddings"),
        ("model.encoder.block.0.layer.0.SelfAttention.q.weight", "encoder"),
        ("model.encoder.final_layer_norm.weight", "encoder"),
        ("model.decoder.block.1.layer.1.EncDecAttention.o.weight", "decoder"),
        ("model.decoder.block.0._checkpoint_wrapped_module.layer.0.k.weight", "decoder"),
        ("model.base_model.model.shared.weight", "embeddings"),
        ("model.base_model.model.encoder.block.0.q.lora_A.default.weight", "lora"),
        ("model.base_model.model.decoder.block.0.v.lora_B.default.weight", "lora"),
        ("value_head.0.weight", "value_head"),
        ("value_head.4.bias", "value_head"),
        ("something.else", "other"),
    ],
)
def test_group_of_names(name, group):
    assert group_of(name) == group


def test_health_metrics_are_exact_ratios_and_aggregate_the_llm():
    metrics = health_metrics(
        {
            "encoder": (1.5625, 25.0, 1.0, 4.0),  # |Δ| 1.25, |θ| 5
            "embeddings": (0.0, 0.0, 0.0, 2.0),  # an all-zero group that did not move
            "value_head": (1.0, 1.0, 4.0, 4.0),
        }
    )
    assert metrics == {
        "health/encoder/rel_update": 0.25,
        "health/encoder/changed_frac": 0.25,
        "health/embeddings/rel_update": 0.0,
        "health/embeddings/changed_frac": 0.0,
        "health/value_head/rel_update": 1.0,
        "health/value_head/changed_frac": 1.0,
        "health/llm/rel_update": 0.25,
        "health/llm/changed_frac": 1 / 6,
    }
    moved_from_zero = health_metrics({"lora": (4.0, 0.0, 1.0, 1.0)})
    assert moved_from_zero["health/lora/rel_update"] == math.inf
    assert nonfinite_groups(moved_from_zero) == ["lora", "llm"]
    assert nonfinite_groups(metrics) == []


class _Named(nn.Module):
    """Parameters named like a GlamPolicy's, with hand-made values."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.encoder = nn.Module()
        self.model.encoder.w = nn.Parameter(torch.tensor([3.0, 4.0, 0.0, 0.0], dtype=dtype))
        self.model.shared = nn.Parameter(torch.zeros(2, dtype=dtype))
        self.value_head = nn.Module()
        self.value_head.w = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_measure_on_hand_made_tensors_is_exact():
    module = _Named()
    health = UpdateHealth(module.named_parameters())
    assert health.present == ["encoder", "embeddings", "value_head"]
    for _ in range(2):  # the second round reuses the snapshot buffers
        health.snapshot()
        with torch.no_grad():
            module.model.encoder.w[3] += 1.25
            module.value_head.w += 0.5
        metrics = health.measure()
        assert metrics["health/encoder/changed_frac"] == 0.25
        assert metrics["health/embeddings/rel_update"] == 0.0
        assert metrics["health/embeddings/changed_frac"] == 0.0
        assert metrics["health/value_head/changed_frac"] == 1.0
        assert metrics["health/llm/changed_frac"] == 1 / 6
    # Second round: θ before = [3, 4, 0, 1.25], Δ = 1.25; value head: θ = [[1.5, .5], [.5, .5]].
    assert metrics["health/encoder/rel_update"] == pytest.approx(1.25 / math.sqrt(26.5625))
    assert metrics["health/value_head/rel_update"] == pytest.approx(1.0 / math.sqrt(3.0))
    # Frozen parameters are neither snapshotted nor measured.
    module.value_head.w.requires_grad_(False)
    assert "value_head" not in UpdateHealth(module.named_parameters()).present


def test_measure_of_a_first_update_is_exact():
    module = _Named()
    health = UpdateHealth(module.named_parameters())
    health.snapshot()
    with torch.no_grad():
        module.model.encoder.w[3] += 1.25
        module.value_head.w += 0.5
    metrics = health.measure()
    assert metrics["health/encoder/rel_update"] == 0.25
    assert metrics["health/value_head/rel_update"] == 1.0
    assert metrics["health/llm/rel_update"] == 0.25


def test_shards_add_up_to_the_whole_tensor():
    """Two "ranks" holding halves of each tensor report what one rank holding all of it does."""
    whole = _Named()
    halves = [_Named(), _Named()]
    for i, half in enumerate(halves):
        for (_, p), (_, full) in zip(
            half.named_parameters(), whole.named_parameters(), strict=True
        ):
            p.data = full.data.chunk(2)[i].clone()
    monitors = [UpdateHealth(m.named_parameters()) for m in (whole, *halves)]
    for monitor in monitors[1:]:
        monitor.sharded = True  # what DTensor parameters make it; forced: no process group here
    for monitor in monitors:
        monitor.snapshot()
    with torch.no_grad():
        for module, part in ((whole, slice(None)), (halves[0], slice(0, 2))):
            module.model.encoder.w[part] *= 2.0
    sent: list[torch.Tensor] = []

    def keep(t: torch.Tensor) -> torch.Tensor:
        sent.append(t.clone())
        return t

    monitors[2].measure(keep)  # rank 1's partial sums, as the collective would deliver them
    sharded = monitors[1].measure(lambda t: t + sent[0])
    assert sharded == pytest.approx(monitors[0].measure())
    assert sharded["health/encoder/changed_frac"] == 0.5


def _step(module: nn.Module, lr: float) -> tuple[UpdateHealth, dict[str, float], float]:
    health = UpdateHealth(module.named_parameters())
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    health.snapshot()
    loss = sum((p.float() ** 2).sum() for p in params)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, 1e9))
    opt.step()
    return health, health.measure(), grad_norm


def _encoder_like(dtype: torch.dtype) -> nn.Module:
    module = _Named(dtype)
    with torch.no_grad():
        module.model.encoder.w.copy_(torch.linspace(0.5, 1.0, 4))
        module.model.shared.fill_(0.75)
    return module


def test_bf16_weights_with_a_small_lr_stall_and_warn():
    health, metrics, grad_norm = _step(_encoder_like(torch.bfloat16), lr=1e-6)
    assert metrics["health/llm/changed_frac"] == 0.0  # every Adam step rounded away
    assert metrics["health/value_head/changed_frac"] > 0  # fp32 value head still learns
    warning = stall_warning(metrics, 1e-6, grad_norm, health.llm_trainable)
    assert warning is not None
    assert "bf16" in warning and "model.precision=bf16-mixed" in warning
    # Same step on fp32 weights: everything with a gradient moves; no warning.
    health, metrics, grad_norm = _step(_encoder_like(torch.float32), lr=1e-6)
    assert metrics["health/llm/changed_frac"] > STALLED_FRACTION
    assert stall_warning(metrics, 1e-6, grad_norm, health.llm_trainable) is None


def test_frozen_llm_warns_and_nothing_to_learn_does_not():
    module = _encoder_like(torch.float32)
    module.model.requires_grad_(False)
    health, metrics, grad_norm = _step(module, lr=1e-3)
    assert not health.llm_trainable and "health/llm/rel_update" not in metrics
    warning = stall_warning(metrics, 1e-3, grad_norm, health.llm_trainable)
    assert warning is not None and "frozen" in warning
    stalled = {"health/llm/changed_frac": 0.0}
    assert stall_warning(stalled, 0.0, 1.0, True) is None  # lr 0: not expected to move
    assert stall_warning(stalled, 1e-3, 0.0, True) is None  # no gradient: nothing to apply
    assert stall_warning(stalled, 1e-3, 1.0, True) is not None
