"""The one action sampler: keyed, rank-independent, faithful to the probabilities."""

from __future__ import annotations

import numpy as np
import torch

from glamhpc.policy.sampling import (
    greedy,
    keyed_uniforms,
    sample_from_uniforms,
    sample_training_actions,
    stream_uniforms,
)


def _logprobs(b: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.log_softmax(torch.randn(b, k, generator=torch.Generator().manual_seed(seed)), -1)


def test_inverse_cdf_picks_the_interval_holding_u() -> None:
    logp = torch.log(torch.tensor([[0.2, 0.3, 0.5]] * 5))
    u = np.array([0.0, 0.19, 0.21, 0.6, 0.999999])
    assert sample_from_uniforms(logp, u).tolist() == [0, 0, 1, 2, 2]


def test_zero_probability_candidates_are_never_chosen() -> None:
    logp = torch.log(torch.tensor([[0.0, 1.0, 0.0]])).expand(200, 3)
    u = np.linspace(0.0, 1.0, 200, endpoint=False)
    assert set(sample_from_uniforms(logp, u).tolist()) == {1}


def test_frequencies_follow_the_probabilities() -> None:
    probs = torch.tensor([0.1, 0.6, 0.3])
    logp = probs.log().expand(40_000, 3)
    u = np.random.default_rng(0).random(40_000)
    counts = np.bincount(sample_from_uniforms(logp, u).numpy(), minlength=3) / 40_000
    assert np.abs(counts - probs.numpy()).max() < 0.01


def test_dtype_and_device_do_not_change_the_choice() -> None:
    logp = _logprobs(64, 5)
    u = keyed_uniforms(1, 2, 3, 64)
    assert torch.equal(sample_from_uniforms(logp, u), sample_from_uniforms(logp.double(), u))


def test_ranks_slicing_the_envs_pick_what_one_rank_picks() -> None:
    logp = _logprobs(8, 4, seed=3)
    whole = sample_training_actions(logp, 7, 5, 2, 0, 8)
    halves = [sample_training_actions(logp[i : i + 4], 7, 5, 2, i, 8) for i in (0, 4)]
    assert torch.equal(whole, torch.cat(halves))


def test_keys_are_reproducible_and_distinct() -> None:
    a = keyed_uniforms(1, 2, 3, 16)
    assert np.array_equal(a, keyed_uniforms(1, 2, 3, 16))
    for other in ((2, 2, 3), (1, 3, 3), (1, 2, 4)):
        assert not np.array_equal(a, keyed_uniforms(*other, 16))


def test_stream_uniforms_draw_one_per_generator() -> None:
    rngs = [np.random.default_rng(i) for i in range(3)]
    u = stream_uniforms(rngs)
    assert u.tolist() == [np.random.default_rng(i).random() for i in range(3)]


def test_greedy_is_the_argmax() -> None:
    logp = _logprobs(10, 6, seed=1)
    assert torch.equal(greedy(logp), logp.argmax(-1))
