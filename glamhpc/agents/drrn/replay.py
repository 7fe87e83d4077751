"""DRRN's replay memory: upstream's ``PrioritizedReplayMemory`` (GLAM's drrn/utils/memory.py,
from the text-game DRRN code), not a proportional sum tree.

Two ring buffers: a priority one holding the transitions with reward > 0, of capacity
``int(capacity * priority_fraction)``, and the rest. A batch takes ``int(priority_fraction *
batch)`` transitions from the priority buffer and the remainder from the other (each without
replacement, fewer when a buffer holds fewer), shuffled together. With ``priority_fraction`` 0
(upstream's default, and what its DRRN ran: it pushed every transition as non-priority) this is
uniform replay over the last ``capacity`` transitions.

Sampling draws from a generator the caller keys by (seed, update, gradient step): no hidden RNG
state, so the memory's contents alone make resume exact. The contents travel as tensors
(`state_tensors` / `from_tensors`, stored with safetensors), never pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: Token ids are stored as int16: `drrn.vocab_size` is capped below 2**15.
TOKEN_DTYPE = np.int16
_RINGS = ("priority", "rest")


@dataclass(frozen=True)
class Transition:
    state: np.ndarray
    """Token ids of the prompt acted on."""
    action: int
    reward: float
    next_state: np.ndarray
    """Token ids of the next prompt (a new episode's first one after a done: masked)."""
    done: bool


class Ring:
    """A fixed-capacity ring of transitions (oldest overwritten first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: list[Transition] = []
        self.position = 0

    def push(self, item: Transition) -> None:
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            self.items[self.position] = item
        self.position = (self.position + 1) % self.capacity

    def sample(self, k: int, rng: np.random.Generator) -> list[Transition]:
        return [self.items[int(i)] for i in rng.choice(len(self.items), k, replace=False)]


class ReplayMemory:
    """Upstream's prioritised replay (see the module docstring)."""

    def __init__(self, capacity: int, priority_fraction: float = 0.0) -> None:
        if capacity < 1 or not 0.0 <= priority_fraction < 1.0:
            raise ValueError("need capacity >= 1 and 0 <= priority_fraction < 1")
        self.priority_fraction = priority_fraction
        prior = int(capacity * priority_fraction)
        self.rings = {"priority": Ring(max(prior, 1)), "rest": Ring(capacity - prior)}
        self._prior_on = prior > 0

    def __len__(self) -> int:
        return sum(len(r.items) for r in self.rings.values())

    def push(self, item: Transition) -> None:
        prior = self._prior_on and item.reward > 0
        self.rings["priority" if prior else "rest"].push(item)

    def sample(self, batch_size: int, rng: np.random.Generator) -> list[Transition]:
        prior, rest = self.rings["priority"], self.rings["rest"]
        want = int(self.priority_fraction * batch_size) if self._prior_on else 0
        picked = prior.sample(min(want, len(prior.items)), rng)
        picked += rest.sample(min(batch_size - want, len(rest.items)), rng)
        return [picked[int(i)] for i in rng.permutation(len(picked))]

    # ------------------------------------------------------------------ state as tensors
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The whole memory as named tensors (flat token arrays plus lengths), in ring order."""
        out: dict[str, torch.Tensor] = {}
        for name in _RINGS:
            ring = self.rings[name]
            items = ring.items
            for field in ("state", "next_state"):
                seqs = [getattr(t, field) for t in items]
                flat = np.concatenate(seqs) if seqs else np.zeros(0, TOKEN_DTYPE)
                out[f"{name}.{field}.tokens"] = torch.from_numpy(flat.astype(TOKEN_DTYPE))
                lengths = np.array([len(s) for s in seqs], dtype=np.int64)
                out[f"{name}.{field}.lengths"] = torch.from_numpy(lengths)
            out[f"{name}.action"] = torch.tensor([t.action for t in items], dtype=torch.int64)
            out[f"{name}.reward"] = torch.tensor([t.reward for t in items], dtype=torch.float32)
            out[f"{name}.done"] = torch.tensor([t.done for t in items], dtype=torch.bool)
            out[f"{name}.position"] = torch.tensor([ring.position], dtype=torch.int64)
        return out

    def load_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """Restore `state_tensors` into this (empty, same-capacity) memory.

        Raises:
            ValueError: missing keys, or more transitions than a ring holds.
        """
        for name in _RINGS:
            ring = self.rings[name]
            try:
                states = _split(state[f"{name}.state.tokens"], state[f"{name}.state.lengths"])
                nexts = _split(
                    state[f"{name}.next_state.tokens"], state[f"{name}.next_state.lengths"]
                )
                actions = state[f"{name}.action"].tolist()
                rewards = state[f"{name}.reward"].tolist()
                dones = state[f"{name}.done"].tolist()
                position = int(state[f"{name}.position"][0])
            except KeyError as exc:
                raise ValueError(f"replay state lacks {exc.args[0]!r}") from None
            if len(states) > ring.capacity:
                raise ValueError(
                    f"replay state holds {len(states)} {name} transitions, more than the "
                    f"capacity {ring.capacity} (drrn.memory_size or priority_fraction changed)"
                )
            ring.items = [
                Transition(s, int(a), float(r), n, bool(d))
                for s, a, r, n, d in zip(states, actions, rewards, nexts, dones, strict=True)
            ]
            ring.position = position % ring.capacity


def _split(tokens: torch.Tensor, lengths: torch.Tensor) -> list[np.ndarray]:
    flat = tokens.numpy().astype(TOKEN_DTYPE)
    ends = np.cumsum(lengths.numpy())
    return [flat[end - n : end] for end, n in zip(ends, lengths.tolist(), strict=True)]


def as_tokens(seq: Sequence[int]) -> np.ndarray:
    return np.asarray(seq, dtype=TOKEN_DTYPE)
