"""GAE against a direct per-episode reference, on hand cases and random rollouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glamhpc.rl.buffer import RolloutBuffer, compute_gae


def reference_gae(rewards, values, dones, last_values, gamma, lam):
    """Textbook definition: A_t = sum_k (gamma*lam)^k delta_{t+k}, stopping at episode ends."""
    steps, envs = rewards.shape
    adv = np.zeros((steps, envs))
    for i in range(envs):
        for t in range(steps):
            total, factor = 0.0, 1.0
            for k in range(t, steps):
                next_v = last_values[i] if k == steps - 1 else values[k + 1, i]
                nonterminal = 0.0 if dones[k, i] else 1.0
                delta = rewards[k, i] + gamma * next_v * nonterminal - values[k, i]
                total += factor * delta
                if dones[k, i]:
                    break
                factor *= gamma * lam
            adv[t, i] = total
    return adv


def test_single_step_terminal():
    adv, ret = compute_gae(
        torch.tensor([[1.0]]),
        torch.tensor([[0.5]]),
        torch.tensor([[True]]),
        torch.tensor([9.0]),
        0.99,
        0.95,
    )
    assert adv.item() == pytest.approx(0.5)
    assert ret.item() == pytest.approx(1.0)


def test_bootstrap_when_not_done():
    adv, _ = compute_gae(
        torch.tensor([[0.0]]),
        torch.tensor([[0.0]]),
        torch.tensor([[False]]),
        torch.tensor([2.0]),
        0.5,
        1.0,
    )
    assert adv.item() == pytest.approx(1.0)


def test_done_cuts_the_next_episode_value():
    # Env finished at t=0; the value at t=1 belongs to the next episode and must not leak back.
    rewards = torch.tensor([[0.0], [0.0]])
    values = torch.tensor([[0.0], [100.0]])
    dones = torch.tensor([[True], [False]])
    adv, _ = compute_gae(rewards, values, dones, torch.tensor([0.0]), 0.99, 0.99)
    assert adv[0].item() == 0.0


def test_shape_errors():
    with pytest.raises(ValueError, match="must all be"):
        compute_gae(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(3), 1, 1)
    with pytest.raises(ValueError, match="last_values"):
        compute_gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), 1, 1)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.integers(1, 7),
    envs=st.integers(1, 4),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference(steps, envs, gamma, lam, seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(steps, envs))
    values = rng.normal(size=(steps, envs))
    dones = rng.random((steps, envs)) < 0.3
    last = rng.normal(size=envs)
    adv, ret = compute_gae(
        torch.tensor(rewards),
        torch.tensor(values),
        torch.tensor(dones),
        torch.tensor(last),
        gamma,
        lam,
    )
    expected = reference_gae(rewards, values, dones, last, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ret.numpy(), expected + values, rtol=1e-9, atol=1e-9)


def test_buffer_add_and_flatten_order():
    buf = RolloutBuffer(steps=2, num_envs=2)
    for t in range(2):
        buf.add(
            [f"p{t}{i}" for i in range(2)],
            torch.tensor([t, t]),
            torch.zeros(2),
            torch.zeros(2),
            torch.ones(2),
            torch.tensor([False, True]),
        )
    assert buf.flat_prompts() == ["p00", "p01", "p10", "p11"]
    assert buf.actions.reshape(-1).tolist() == [0, 0, 1, 1]
    with pytest.raises(IndexError):
        buf.add(["a", "b"], *(torch.zeros(2),) * 4, torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected 2 prompts"):
        RolloutBuffer(1, 2).add(["a"], *(torch.zeros(2),) * 4, torch.zeros(2, dtype=torch.bool))
