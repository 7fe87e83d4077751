"""The FiLM-CNN + LSTM network and the recurrent PPO's chunk replay, on real minigrid views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glamhpc.agents.symbolic.model import Arch, SymbolicACModel, init_linear
from glamhpc.agents.symbolic.ppo import chunk_problem, replay_chunks
from glamhpc.agents.symbolic.rollout import Learner, collect
from glamhpc.agents.symbolic.vocab import build_vocab, encode
from glamhpc.envs.batch import EnvBatch

ARCH = Arch(vocab_size=40, num_actions=6, image_dim=16, memory_dim=8, instr_dim=12)


def _net(seed: int = 0) -> SymbolicACModel:
    torch.manual_seed(seed)
    return SymbolicACModel(ARCH).eval()


def test_shapes_and_babyai_initialisation() -> None:
    net = _net()
    images = torch.randint(0, 11, (3, 7, 7, 3), dtype=torch.uint8)
    tokens, lengths = torch.randint(2, 40, (3, 5)), torch.tensor([5, 2, 1])
    logprobs, values, memory = net(images, net.encode_instr(tokens, lengths), torch.zeros(3, 16))
    assert logprobs.shape == (3, 6) and values.shape == (3,) and memory.shape == (3, 16)
    assert torch.allclose(logprobs.exp().sum(-1), torch.ones(3))
    linear = torch.nn.Linear(7, 5)
    init_linear(linear)
    assert torch.allclose(linear.weight.norm(dim=1), torch.ones(5)) and not linear.bias.any()
    assert torch.allclose(net.actor[0].weight.norm(dim=1), torch.ones(64))


def test_the_instruction_is_read_at_its_last_word_whatever_the_padding() -> None:
    net = _net()
    short = net.encode_instr(torch.tensor([[5, 6, 7]]), torch.tensor([3]))
    padded = net.encode_instr(torch.tensor([[5, 6, 7, 0, 0]]), torch.tensor([3]))
    other = net.encode_instr(torch.tensor([[5, 6, 8]]), torch.tensor([3]))
    assert torch.allclose(short, padded, atol=1e-6) and not torch.allclose(short, other)


def test_memory_and_instruction_change_the_policy() -> None:
    net = _net()
    images = torch.randint(0, 11, (1, 7, 7, 3), dtype=torch.uint8)
    instr = net.encode_instr(torch.tensor([[3, 4]]), torch.tensor([2]))
    other = net.encode_instr(torch.tensor([[9, 4]]), torch.tensor([2]))
    base, _, memory = net(images, instr, torch.zeros(1, 16))
    assert not torch.allclose(net(images, instr, memory)[0], base)  # remembers
    assert not torch.allclose(net(images, other, torch.zeros(1, 16))[0], base)  # reads the mission


@pytest.mark.parametrize(
    ("steps", "minibatch", "recurrence", "problem"),
    [(40, 1280, 20, None), (40, 40, 20, None), (40, 20, 20, None), (30, 20, 20, "steps_per_env"),
     (40, 30, 20, "minibatch_size"), (7, 7, 1, None)],
)  # fmt: skip
def test_chunk_problem(steps: int, minibatch: int, recurrence: int, problem: str | None) -> None:
    found = chunk_problem(steps, minibatch, recurrence)
    assert (found is None) if problem is None else (problem in str(found))


def test_replay_through_time_reproduces_acting_across_episode_ends() -> None:
    """Chunks replayed from their stored start memory, masks cutting at episode ends, give the
    log-probs and values the rollout acted with (eval mode: no batch statistics involved)."""
    envs = EnvBatch("BabyAI-GoToRedBallNoDists-v0", num_envs=3, seed=4)
    vocab = build_vocab(envs.missions())
    learner = Learner(_net(1), 3).eval()
    rollout = collect(learner, envs, vocab, steps=80, seed=2, update=0)
    assert rollout.dones.any(), "64-step episodes: each env ends one"
    assert not rollout.masks[0].eq(0).any() and torch.equal(
        rollout.masks[1:], (~rollout.dones[:-1]).float()
    )
    recurrence, n = 20, 3
    chunks = np.arange(80 // recurrence * n)
    with torch.no_grad():
        all_logprobs, values, (t, env) = replay_chunks(
            learner.net, rollout, chunks, recurrence, torch.device("cpu")
        )
    taken = all_logprobs.gather(1, rollout.actions[t, env][:, None]).squeeze(1)
    assert torch.allclose(taken, rollout.logprobs[t, env], atol=1e-5)
    assert torch.allclose(values, rollout.values[t, env], atol=1e-5)
    # Without the masks the replay would carry memory across an episode end: it would differ.
    cut = rollout.masks.clone()
    rollout.masks.fill_(1.0)
    with torch.no_grad():
        leaky, _, _ = replay_chunks(learner.net, rollout, chunks, recurrence, torch.device("cpu"))
    rollout.masks.copy_(cut)
    assert not torch.allclose(leaky, all_logprobs, atol=1e-5)


def test_encode_feeds_the_network_real_missions() -> None:
    envs = EnvBatch("BabyAI-MixedTrainLocal-v0", num_envs=4, seed=3)
    vocab = build_vocab(envs.missions())
    tokens, lengths = encode(envs.missions(), vocab)
    net = SymbolicACModel(Arch(len(vocab), 6, 16, 8, 12)).eval()
    images = torch.as_tensor(envs.images())
    out = net(images, net.encode_instr(torch.tensor(tokens), torch.tensor(lengths)),
              torch.zeros(4, 16))  # fmt: skip
    assert torch.isfinite(out[0]).all() and images.shape == (4, 7, 7, 3)


def test_env_batch_images_are_the_views_minigrid_returns() -> None:
    envs = EnvBatch("BabyAI-GoToRedBallNoDists-v0", num_envs=2, seed=5)
    for action in (2, 0, 2, 1):
        before = envs.images()
        obs, *_ = envs.envs[0].step(action)  # one env stepped directly: its view is returned
        after = envs.images()
        assert after.dtype == np.uint8 and after.shape == (2, 7, 7, 3)
        assert np.array_equal(after[0], obs["image"]) and np.array_equal(after[1], before[1])
