"""GlamPolicy: shapes and dtypes, acting, evaluation with gradients, save/load, scoring modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_model as save_safetensors

from glamhpc.policy.glam import GlamPolicy, action_stats
from glamhpc.policy.scoring import max_paper_probability

from . import REAL_PROMPTS, STANDARD_ACTIONS, load_tiny, prompts


@pytest.fixture
def policy() -> GlamPolicy:
    model, tok = load_tiny()
    return GlamPolicy(model, tok, STANDARD_ACTIONS)


def test_forward_shapes_and_dtypes(policy: GlamPolicy) -> None:
    logprobs, values = policy(REAL_PROMPTS)
    assert logprobs.shape == (len(REAL_PROMPTS), 6) and logprobs.dtype == torch.float32
    assert values.shape == (len(REAL_PROMPTS),) and values.dtype == torch.float32
    torch.testing.assert_close(logprobs.logsumexp(-1), torch.zeros(len(REAL_PROMPTS)))
    assert all(p.dtype == torch.float32 for p in policy.value_head.parameters())
    widths = [m.out_features for m in policy.value_head if isinstance(m, torch.nn.Linear)]
    assert widths == [1024, 1024, 1]
    assert policy.num_actions == 6


def test_act_sampling_is_seeded_and_greedy_is_argmax(policy: GlamPolicy) -> None:
    batch = prompts(8)
    a1 = policy.act(batch, generator=torch.Generator().manual_seed(3))
    a2 = policy.act(batch, generator=torch.Generator().manual_seed(3))
    for x, y in zip(a1, a2, strict=True):
        assert torch.equal(x, y)
    actions, logp, values, entropy = a1
    assert actions.dtype == torch.long and actions.shape == (8,)
    assert not logp.requires_grad and not values.requires_grad
    assert bool((entropy > 0).all()) and bool((logp <= 0).all())
    greedy, *_ = policy.act(batch, greedy=True)
    with torch.no_grad():
        full, _ = policy(batch)
    assert torch.equal(greedy, full.argmax(-1))


def test_evaluate_matches_act_and_has_gradients(policy: GlamPolicy) -> None:
    batch = prompts(4, seed=1)
    actions, old_logp, old_values, old_entropy = policy.act(batch, torch.Generator().manual_seed(0))
    new_logp, entropy, values = policy.evaluate(batch, actions)
    torch.testing.assert_close(new_logp.detach(), old_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(values.detach(), old_values, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy.detach(), old_entropy, atol=1e-5, rtol=0)
    (new_logp.sum() + values.sum() + entropy.sum()).backward()
    for name, param in policy.named_parameters():
        assert param.grad is not None, name
    # Gradients reach both the LLM (encoder included) and the value head.
    assert policy.model.encoder.block[0].layer[0].SelfAttention.q.weight.grad.abs().sum() > 0
    assert policy.value_head[0].weight.grad.abs().sum() > 0


def test_action_stats() -> None:
    logprobs = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1.0, 1e-12, 1e-12]]))
    chosen, entropy = action_stats(logprobs, torch.tensor([1, 0]))
    torch.testing.assert_close(chosen, torch.log(torch.tensor([0.25, 1.0])))
    assert entropy[0].item() == pytest.approx(1.0397, abs=1e-4) and entropy[1].item() < 1e-9


def test_safetensors_round_trip(policy: GlamPolicy, tmp_path: Path) -> None:
    with torch.no_grad():
        for p in policy.parameters():  # make the weights differ from a fresh policy
            p.add_(0.01 * torch.randn_like(p))
        before = policy(REAL_PROMPTS)
    path = tmp_path / "policy.safetensors"
    save_safetensors(policy, str(path))  # dedupes T5's shared embedding tensors
    model, tok = load_tiny()
    fresh = GlamPolicy(model, tok, STANDARD_ACTIONS)
    load_safetensors(fresh, str(path))
    with torch.no_grad():
        after = fresh(REAL_PROMPTS)
    for x, y in zip(before, after, strict=True):
        torch.testing.assert_close(x, y)
    # A plain state_dict round-trips too (candidate buffers are not persisted).
    keys = set(policy.state_dict())
    assert "candidate_ids" not in keys and "value_head.0.weight" in keys


def test_paper_scoring_caps_probabilities() -> None:
    model, tok = load_tiny()
    paper = GlamPolicy(model, tok, STANDARD_ACTIONS, scoring="paper")
    with torch.no_grad():
        logprobs, _ = paper(REAL_PROMPTS)
    assert logprobs.exp().max().item() <= max_paper_probability(6) + 1e-6
    with pytest.raises(ValueError):
        GlamPolicy(model, tok, STANDARD_ACTIONS, scoring="sum")  # type: ignore[arg-type]


def test_dropout_disabled_and_train_mode_deterministic(policy: GlamPolicy) -> None:
    assert all(m.p == 0.0 for m in policy.modules() if isinstance(m, torch.nn.Dropout))
    policy.train()
    with torch.no_grad():
        a, _ = policy(REAL_PROMPTS)
        b, _ = policy(REAL_PROMPTS)
    assert torch.equal(a, b)


def test_prompt_cache_is_bounded_and_consistent() -> None:
    model, tok = load_tiny()
    small = GlamPolicy(model, tok, STANDARD_ACTIONS, prompt_cache_size=3)
    batch = prompts(6, seed=2)
    ids = small.tokenize(batch)
    assert ids == [tok(p)["input_ids"] for p in batch]
    assert len(small._prompt_cache) == 3
    assert small.tokenize(batch[:2] + batch[:2]) == ids[:2] + ids[:2]


def test_bf16_model_keeps_float32_outputs() -> None:
    model, tok = load_tiny(dtype="bf16")
    policy = GlamPolicy(model, tok, STANDARD_ACTIONS)
    logprobs, values = policy(REAL_PROMPTS)
    assert logprobs.dtype == torch.float32 and values.dtype == torch.float32
    assert policy.value_head[0].weight.dtype == torch.float32
    values.sum().backward()
    assert model.shared.weight.grad is not None
