"""DRRN's pure parts: the unigram tokenizer, the replay memory, the network and one Q step."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from glamhpc.agents.drrn.learn import act, replay_rng, td_step
from glamhpc.agents.drrn.network import DRRN, pad, param_count
from glamhpc.agents.drrn.replay import ReplayMemory, Transition, as_tokens
from glamhpc.agents.drrn.tokenizer import (
    PAD,
    SPACE,
    UNK,
    build_tokenizer,
    corpus_counts,
    encode,
    unigram_vocab,
)

TEXTS = ["go to the red ball", "You see a wall 2 steps forward,", "turn left", "turn right"]


# ---------------------------------------------------------------------------------- tokenizer
def test_corpus_counts_words_and_characters() -> None:
    words, chars = corpus_counts(["a b a", "b\nc"])
    assert words == Counter({f"{SPACE}a": 2, f"{SPACE}b": 1, f"{SPACE}b\nc": 1})
    assert chars["a"] == 2 and chars["\n"] == 1 and chars[SPACE] == 4


def test_unigram_vocab_keeps_every_character_then_the_most_frequent_words() -> None:
    words, chars = corpus_counts(["aa b aa c aa b"])
    vocab = unigram_vocab(words, chars, vocab_size=2 + len(chars) + 1)
    pieces = [p for p, _ in vocab]
    assert pieces[:2] == [PAD, UNK]
    assert set(chars) <= set(pieces)
    assert f"{SPACE}aa" in pieces and f"{SPACE}b" not in pieces  # the cap drops the rarer
    scores = dict(vocab)
    assert scores[f"{SPACE}aa"] > scores["c"]  # log relative frequencies
    assert all(s <= 0 for s in scores.values())
    with pytest.raises(ValueError, match="at least"):
        unigram_vocab(words, chars, vocab_size=len(chars))


def test_tokenizer_words_are_pieces_unseen_words_are_spelt_and_json_is_deterministic() -> None:
    from tokenizers import Tokenizer

    tok = build_tokenizer(TEXTS, vocab_size=8000)
    assert tok.get_vocab_size() < 8000  # capped at what the corpus supports
    assert tok.encode("turn left").tokens == [f"{SPACE}turn", f"{SPACE}left"]
    assert tok.encode("go tel").tokens == [f"{SPACE}go", SPACE, "t", "e", "l"]
    assert tok.encode("zq").ids[1:] == [1]  # characters never seen: one (fused) <unk>
    again = build_tokenizer(list(TEXTS), vocab_size=8000)
    assert again.to_str() == tok.to_str()
    assert Tokenizer.from_str(tok.to_str()).encode(TEXTS[1]).ids == tok.encode(TEXTS[1]).ids
    assert encode(tok, ["", "turn left"])[0] == [1]  # never an empty sequence


# ---------------------------------------------------------------------------------- replay
def _t(i: int, reward: float = 0.0) -> Transition:
    return Transition(as_tokens([i + 1, 2]), i % 3, reward, as_tokens([i + 2]), i % 2 == 0)


def test_ring_overwrites_the_oldest_and_rewarded_transitions_go_to_the_priority_ring() -> None:
    memory = ReplayMemory(capacity=10, priority_fraction=0.3)
    for i in range(12):
        memory.push(_t(i, reward=1.0 if i in (3, 7) else 0.0))
    prior, rest = memory.rings["priority"], memory.rings["rest"]
    assert [t.action for t in prior.items] == [0, 1]  # i = 3, 7
    assert rest.capacity == 7 and len(rest.items) == 7
    assert [int(t.state[0]) - 1 for t in rest.items] == [9, 10, 11, 4, 5, 6, 8]
    assert len(memory) == 9


def test_sample_takes_the_priority_fraction_without_replacement_and_is_keyed() -> None:
    memory = ReplayMemory(capacity=100, priority_fraction=0.5)
    for i in range(40):
        memory.push(_t(i, reward=1.0 if i % 4 == 0 else 0.0))
    batch = memory.sample(8, replay_rng(1, 2, 0))
    assert sum(t.reward > 0 for t in batch) == 4
    assert len({int(t.state[0]) for t in batch}) == 8
    same = memory.sample(8, replay_rng(1, 2, 0))
    assert [int(t.state[0]) for t in same] == [int(t.state[0]) for t in batch]
    other = memory.sample(8, replay_rng(1, 3, 0))
    assert [int(t.state[0]) for t in other] != [int(t.state[0]) for t in batch]
    # Upstream: a buffer short of its share gives fewer, the batch is not topped up.
    short = ReplayMemory(capacity=100, priority_fraction=0.5)
    for i in range(10):
        short.push(_t(i))
    assert len(short.sample(8, replay_rng(0, 0, 0))) == 4


def test_fraction_zero_is_uniform_replay_of_everything() -> None:
    memory = ReplayMemory(capacity=5)
    for i in range(5):
        memory.push(_t(i, reward=1.0))
    assert len(memory.rings["rest"].items) == 5 and not memory.rings["priority"].items
    assert len(memory.sample(5, replay_rng(0, 0, 0))) == 5


def test_replay_state_round_trips_through_tensors_exactly() -> None:
    from safetensors.torch import load, save

    memory = ReplayMemory(capacity=6, priority_fraction=0.5)
    for i in range(9):
        memory.push(_t(i, reward=float(i % 3 == 0)))
    back = ReplayMemory(capacity=6, priority_fraction=0.5)
    back.load_tensors(load(save(memory.state_tensors())))
    for name in ("priority", "rest"):
        a, b = memory.rings[name], back.rings[name]
        assert a.position == b.position and len(a.items) == len(b.items)
        for x, y in zip(a.items, b.items, strict=True):
            assert np.array_equal(x.state, y.state) and np.array_equal(x.next_state, y.next_state)
            assert (x.action, x.reward, x.done) == (y.action, y.reward, y.done)
    smaller = ReplayMemory(capacity=2)
    with pytest.raises(ValueError, match="capacity"):
        smaller.load_tensors(memory.state_tensors())
    with pytest.raises(ValueError, match="lacks"):
        ReplayMemory(capacity=6).load_tensors({})


# ---------------------------------------------------------------------------------- network
def test_network_size_formula_padding_and_shapes() -> None:
    torch.manual_seed(0)
    net = DRRN(vocab_size=30, hidden=8)
    assert sum(p.numel() for p in net.parameters()) == param_count(30, 8)
    q = net([[1, 2, 3], [4]], [[5], [6, 7], [8]])
    assert q.shape == (2, 3)
    alone = net([[4]], [[5], [6, 7], [8]])
    assert torch.allclose(alone[0], q[1], atol=1e-6)  # padding never leaks into a state
    ids, lengths = pad([[1, 2], [3]])
    assert ids.tolist() == [[1, 2], [3, 0]] and lengths.tolist() == [2, 1]
    with pytest.raises(ValueError):
        pad([[1], []])


def test_act_is_keyed_and_td_steps_fit_a_fixed_target() -> None:
    torch.manual_seed(0)
    net = DRRN(vocab_size=12, hidden=8)
    states, actions = [[1, 2], [3, 4, 5]], [[6], [7], [8]]
    a1, logp = act(net, states, actions, seed=1, update=0, step=0)
    a2, _ = act(net, states, actions, seed=1, update=0, step=0)
    assert torch.equal(a1, a2) and logp.shape == (2, 3)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2))
    batch = [
        Transition(as_tokens([1, 2]), 0, 1.0, as_tokens([9]), True),
        Transition(as_tokens([3, 4, 5]), 2, 0.0, as_tokens([10]), True),
    ]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = td_step(net, optimizer, batch, actions, gamma=0.9, clip=5.0)
    for _ in range(60):
        last = td_step(net, optimizer, batch, actions, gamma=0.9, clip=5.0)
    assert first["target_mean"] == pytest.approx(0.5)  # dones: targets are the rewards
    assert last["td_loss"] < 0.1 * first["td_loss"]
    q = net([[1, 2]], actions)[0, 0]
    assert float(q) == pytest.approx(1.0, abs=0.2)
    assert all(isinstance(m, nn.Module) for m in (net.obs_encoder, net.act_encoder))
