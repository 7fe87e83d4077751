"""Candidate scoring: every fast path equals the naive reference, for values and gradients.

Models: tiny-t5 (the built-in default) and a random-init FLAN-T5-small-shaped T5 with 2 encoder +
2 decoder layers instead of 8 + 8 (each layer, the embeddings and the 32128-token untied head
keep the exact flan-t5-small shapes; fewer layers only to keep the suite fast).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from glamhpc.policy.scoring import (
    Candidates,
    ScoreOutput,
    _packable,
    encode_candidates,
    max_paper_probability,
    pad_prompts,
    policy_logits,
    score_prompts,
)

from . import STANDARD_ACTIONS, load_tiny, prompts, small_t5

FAST_PATHS = ("fast", "packed", "cached", "lamorel")
ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return load_tiny()


@pytest.fixture(scope="module")
def small() -> Any:
    return small_t5(num_layers=2)


def _random_setup(vocab: int, lengths: list[int], cand_lengths: list[int], seed: int = 0) -> Any:
    """Random prompt ids (ending in </s>) and candidates with the given token counts (+</s>)."""
    gen = torch.Generator().manual_seed(seed)
    prompt_ids = [[*torch.randint(3, vocab, (n - 1,), generator=gen).tolist(), 1] for n in lengths]
    width = max(cand_lengths) + 1
    ids = torch.zeros((len(cand_lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for k, n in enumerate(cand_lengths):
        ids[k, :n] = torch.randint(3, vocab, (n,), generator=gen)
        ids[k, n] = 1
        mask[k, : n + 1] = True
    return prompt_ids, Candidates(ids, mask, tuple(f"a{k}" for k in range(len(cand_lengths))))


def _tiny_setup(tok: Any, n: int = 5, extra: tuple[str, ...] = ()) -> Any:
    # Single-token standard actions plus multi-token strings: candidates of lengths 2..8.
    actions = [*STANDARD_ACTIONS, "go to the red ball", "xolo dax", *extra]
    ids = tok(prompts(n, seed=3))["input_ids"]
    return ids, encode_candidates(tok, actions)


def _setups(tiny: tuple[Any, Any], small: Any) -> dict[str, tuple[Any, list[list[int]], Any]]:
    model, tok = tiny
    tiny_ids, tiny_cands = _tiny_setup(tok)
    small_ids, small_cands = _random_setup(32128, [37, 12, 25], [2, 1, 3, 2, 5])
    return {"tiny": (model, tiny_ids, tiny_cands), "small": (small, small_ids, small_cands)}


def _score(
    model: Any, ids: list[list[int]], cands: Candidates, method: str, **kw: Any
) -> ScoreOutput:
    return score_prompts(model, ids, cands, pad_id=0, method=method, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# values


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_all_paths_match_naive(tiny: Any, small: Any, which: str) -> None:
    model, ids, cands = _setups(tiny, small)[which]
    with torch.no_grad():
        ref = _score(model, ids, cands, "naive")
        assert ref.scores.dtype == torch.float32 and ref.hidden.dtype == torch.float32
        assert ref.scores.shape == (len(ids), cands.num)
        assert ref.hidden.shape == (len(ids), model.config.d_model)
        assert bool((ref.scores < 0).all())
        for method in FAST_PATHS:
            out = _score(model, ids, cands, method)
            torch.testing.assert_close(out.scores, ref.scores, atol=ATOL, rtol=0, msg=method)
            torch.testing.assert_close(out.hidden, ref.hidden, atol=ATOL, rtol=0, msg=method)


def test_naive_matches_hf_loss(tiny: Any) -> None:
    """The reference itself: score = -(summed token NLL) of the HF forward with labels."""
    model, tok = tiny
    ids, cands = _tiny_setup(tok, n=2)
    with torch.no_grad():
        ref = _score(model, ids, cands, "naive").scores
        for b, prompt in enumerate(ids):
            for k in range(cands.num):
                n = int(cands.mask[k].sum())
                labels = cands.ids[k : k + 1, :n]
                out = model(input_ids=torch.tensor([prompt]), labels=labels)
                assert ref[b, k].item() == pytest.approx(-out.loss.item() * n, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# gradients


def _grads(model: Any, ids: list[list[int]], cands: Candidates, method: str) -> dict[str, Any]:
    model.zero_grad(set_to_none=True)
    out = _score(model, ids, cands, method)
    gen = torch.Generator().manual_seed(7)
    w_scores = torch.randn(out.scores.shape, generator=gen)
    w_hidden = torch.randn(out.hidden.shape, generator=gen)
    # A PPO-like scalar: a policy term through the scores and a value term through the hidden state.
    loss = (torch.log_softmax(out.scores, -1) * w_scores).sum() + (out.hidden * w_hidden).sum()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def naive_grads() -> dict[str, Any]:
    return {}  # reference gradients, computed once per model


@pytest.mark.parametrize("which", ["tiny", "small"])
@pytest.mark.parametrize("method", ["packed", "cached", "lamorel"])
def test_gradients_match_naive(
    tiny: Any, small: Any, naive_grads: dict[str, Any], which: str, method: str
) -> None:
    model, ids, cands = _setups(tiny, small)[which]
    ids = ids[:2]  # two prompts of different lengths keep the naive backward cheap
    if which not in naive_grads:
        naive_grads[which] = _grads(model, ids, cands, "naive")
    ref = naive_grads[which]
    got = _grads(model, ids, cands, method)
    assert set(got) == set(ref)
    # Every parameter gets a gradient (encoder, shared cross-attention K/V, decoder, head).
    assert len(ref) == len(list(model.parameters()))
    for name, grad in ref.items():
        # 1e-5 on the scale of each gradient tensor (the entries reach ~30 here, where float32
        # summation-order rounding alone is ~1e-6 relative).
        err = (got[name] - grad).abs().max().item()
        scale = max(1.0, grad.abs().max().item())
        assert err <= ATOL * scale, f"{name}: max |diff| {err:.2e} vs scale {scale:.1f}"


# ---------------------------------------------------------------------------------------------
# padding, batching, chunking


def test_padding_never_leaks_between_prompts(tiny: Any, small: Any) -> None:
    for model, _, _ in _setups(tiny, small).values():
        vocab = model.config.vocab_size
        ids, cands = _random_setup(vocab, [20, 3, 90], [1, 3, 2], seed=1)
        ids.append(ids[0])
        with torch.no_grad():
            alone = _score(model, [ids[0]], cands, "fast").scores[0]
            mixed = _score(model, ids, cands, "fast").scores
        torch.testing.assert_close(mixed[0], alone, atol=ATOL, rtol=0)
        # Same prompt twice in one batch, padded to another length: same scores.
        torch.testing.assert_close(mixed[3], alone, atol=ATOL, rtol=0)


def test_longer_candidates_do_not_change_scores(tiny: Any) -> None:
    model, tok = tiny
    ids, cands = _tiny_setup(tok)
    _, more = _tiny_setup(tok, extra=("pick up the purple box after you go to the grey key",))
    assert more.length > cands.length  # the new candidate widens the padded candidate matrix
    with torch.no_grad():
        for method in FAST_PATHS:
            base = _score(model, ids, cands, method).scores
            wider = _score(model, ids, more, method).scores
            torch.testing.assert_close(wider[:, : cands.num], base, atol=ATOL, rtol=0)


@pytest.mark.parametrize("method", ["fast", "cached", "lamorel"])
def test_chunking_gives_identical_results(tiny: Any, method: str) -> None:
    model, tok = tiny
    ids, cands = _tiny_setup(tok, n=7)
    with torch.no_grad():
        whole = _score(model, ids, cands, method)
        for budget in (1, 500, 2000):  # 1: one prompt per chunk
            chunked = _score(model, ids, cands, method, max_batch_tokens=budget)
            torch.testing.assert_close(chunked.scores, whole.scores, atol=ATOL, rtol=0)
            torch.testing.assert_close(chunked.hidden, whole.hidden, atol=ATOL, rtol=0)


def test_bf16_scores_close_to_fp32() -> None:
    model, tok = load_tiny()
    model16, _ = load_tiny(dtype="bf16")
    ids, cands = _tiny_setup(tok)
    with torch.no_grad():
        ref = _score(model, ids, cands, "naive").scores
        for method in ("packed", "cached"):
            out = _score(model16, ids, cands, method)
            assert out.scores.dtype == torch.float32 and out.hidden.dtype == torch.float32
            torch.testing.assert_close(out.scores, ref, atol=0.3, rtol=0.02)


# ---------------------------------------------------------------------------------------------
# helpers and policy rules


def test_encode_candidates_one_eos_and_padding(tiny: Any) -> None:
    _, tok = tiny
    cands = encode_candidates(tok, ["turn left", "go to the red ball"])
    eos = tok.eos_token_id
    for k in range(2):
        row = cands.ids[k][cands.mask[k]].tolist()
        assert row[-1] == eos and row.count(eos) == 1
    assert cands.ids[0, 2:].eq(tok.pad_token_id).all() and not cands.mask[0, 2:].any()
    with pytest.raises(ValueError):
        encode_candidates(tok, [])


def test_pad_prompts() -> None:
    ids, mask = pad_prompts([[5, 6, 1], [7, 1]], pad_id=0)
    assert ids.tolist() == [[5, 6, 1], [7, 1, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_policy_logits_glam_is_log_softmax() -> None:
    scores = torch.tensor([[-1.0, -2.0, -30.0], [-5.0, -5.0, -5.0]])
    out = policy_logits(scores, "glam")
    torch.testing.assert_close(out, torch.log_softmax(scores, -1))
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2))


def test_policy_logits_paper_formula() -> None:
    scores = torch.tensor([[-0.1, -2.0, -4.0, -8.0, -9.0, -100.0]], dtype=torch.float64)
    p = scores.exp()
    expected = torch.softmax(p / p.max(), dim=-1).float()
    out = policy_logits(scores, "paper")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.exp(), expected)
    # The paper-era rule caps any action at e / (e + K - 1), ~0.35 for 6 actions.
    certain = torch.tensor([[0.0, -80.0, -80.0, -80.0, -80.0, -80.0]])
    top = policy_logits(certain, "paper").exp().max().item()
    assert top == pytest.approx(max_paper_probability(6), abs=1e-6)
    assert max_paper_probability(6) == pytest.approx(math.e / (math.e + 5))
    assert top < 0.36
    with pytest.raises(ValueError):
        policy_logits(scores, "sum")  # type: ignore[arg-type]


def test_fast_path_falls_back_when_dropout_is_active(small: Any) -> None:
    """The packed path does not apply dropout: active dropout routes to the cached path."""
    assert _packable(small)  # eval mode
    small.train()
    try:
        assert not _packable(small)  # flan-t5 configs carry dropout 0.1
    finally:
        small.eval()


def test_lora_wrapped_model_matches_naive() -> None:
    """peft LoRA (an option of the trainer) goes through the same fast path, exactly."""
    from peft import LoraConfig, get_peft_model

    model, tok = load_tiny()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM")
    lora = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:  # B starts at 0: make the adapters change the output
                param.normal_(0.0, 0.1)
    ids, cands = _tiny_setup(tok, n=2)
    ref = _grads(lora, ids, cands, "naive")
    got = _grads(lora, ids, cands, "fast")
    assert set(got) == set(ref) and all("lora_" in n for n in ref)  # only adapters train
    for name, grad in ref.items():
        err = (got[name] - grad).abs().max().item()
        assert err <= ATOL * max(1.0, grad.abs().max().item()), name
