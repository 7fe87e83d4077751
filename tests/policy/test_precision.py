"""GlamPolicy under `model.precision=bf16-mixed`: bf16 autocast compute on fp32 weights.

CPU autocast in bf16 is the same mechanism as on CUDA, so these run without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from glamhpc.policy.glam import GlamPolicy

from . import REAL_PROMPTS, STANDARD_ACTIONS, load_tiny


def _pair() -> tuple[GlamPolicy, GlamPolicy]:
    """An fp32 policy and a bf16-mixed one over the SAME model and value head weights."""
    model, tok = load_tiny()
    fp32 = GlamPolicy(model, tok, STANDARD_ACTIONS)
    mixed = GlamPolicy(model, tok, STANDARD_ACTIONS, compute_dtype=torch.bfloat16)
    mixed.value_head.load_state_dict(fp32.value_head.state_dict())
    return fp32, mixed


@pytest.mark.parametrize("method", ["fast", "cached", "naive"])
def test_bf16_mixed_scores_close_to_fp32_and_fp32_outputs(method: str) -> None:
    fp32, mixed = _pair()
    fp32.method = mixed.method = method
    with torch.no_grad():
        ref_logp, ref_values = fp32(REAL_PROMPTS)
        scores = mixed.score(REAL_PROMPTS)
        logp, values = mixed(REAL_PROMPTS)
    assert scores.scores.dtype == torch.float32 and scores.hidden.dtype == torch.float32
    assert logp.dtype == torch.float32 and values.dtype == torch.float32
    # bf16 keeps ~3 significant digits: loose, but far below the gap between candidates.
    torch.testing.assert_close(logp, ref_logp, atol=0.05, rtol=0.02)
    torch.testing.assert_close(values, ref_values, atol=0.02, rtol=0.02)
    assert not torch.equal(logp, ref_logp)  # bf16 did run (autocast was on)


def test_value_head_runs_in_fp32_outside_autocast() -> None:
    _, mixed = _pair()
    seen: list[tuple[torch.dtype, bool]] = []

    def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append((args[0].dtype, torch.is_autocast_enabled("cpu")))

    linears: list[torch.dtype] = []
    mixed.value_head.register_forward_pre_hook(hook)
    mixed.value_head[0].register_forward_hook(lambda _m, _a, out: linears.append(out.dtype))
    mixed(REAL_PROMPTS)
    assert seen == [(torch.float32, False)] and linears == [torch.float32]


@pytest.mark.parametrize("lr", [1e-3, 1e-6])
def test_one_update_moves_the_fp32_master_weights(lr: float) -> None:
    # The bug this precision fixes: Adam on bf16 weights rounds lr 1e-6 steps away (0.65% of the
    # weights moved); on fp32 master weights nearly every weight with a gradient moves.
    _, mixed = _pair()
    llm = dict(mixed.model.named_parameters())
    before = {name: p.detach().clone() for name, p in mixed.named_parameters()}
    optimizer = torch.optim.Adam(mixed.parameters(), lr=lr, eps=1e-8)
    logp, values = mixed(REAL_PROMPTS)
    (-logp[:, 0].mean() + values.pow(2).mean()).backward()
    optimizer.step()
    assert all(p.dtype == torch.float32 for p in mixed.parameters())
    moved = total = 0
    for name, p in llm.items():
        assert p.grad is not None and p.grad.dtype == torch.float32
        got_grad = p.grad != 0
        moved += int((p.detach() != before[f"model.{name}"])[got_grad].sum())
        total += int(got_grad.sum())
    assert total > 0 and moved / total > 0.9, moved / total
    head = [n for n in before if n.startswith("value_head.")]
    assert all(not torch.equal(mixed.get_parameter(n), before[n]) for n in head)


def test_fp32_compute_dtype_means_no_autocast() -> None:
    model, tok = load_tiny()
    assert (
        GlamPolicy(model, tok, STANDARD_ACTIONS, compute_dtype=torch.float32).compute_dtype is None
    )
    with pytest.raises(ValueError, match="compute_dtype"):
        GlamPolicy(model, tok, STANDARD_ACTIONS, compute_dtype=torch.float16)
