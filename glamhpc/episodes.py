"""Run a policy for a fixed number of episodes on deterministic seeds (evaluation core).

Shared by `glamhpc eval`, the learning benchmark and the baselines. A policy here is any function
from prompts to log-probabilities over the candidate actions ([B, K] tensor or array); the random
agent and the blind control are policies like the trained one, so all are measured identically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PolicyFn = Callable[[list[str]], Any]
PromptTransform = Callable[[list[str], np.random.Generator], list[str]]

# Upstream test envs use seeds 1e9 * seed + i: disjoint from every training seed.
TEST_SEED_BASE = 1_000_000_000


@dataclass
class EpisodeResults:
    success: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.success)

    def success_rate(self) -> float:
        return float(np.mean(self.success)) if self.success else float("nan")


def uniform_policy(num_actions: int) -> PolicyFn:
    logp = np.full(num_actions, -np.log(num_actions))
    return lambda prompts: np.tile(logp, (len(prompts), 1))


def shuffle_between_envs(prompts: list[str], rng: np.random.Generator) -> list[str]:
    """The blind control: each env is shown another env's prompt (a derangement when N > 1)."""
    n = len(prompts)
    if n < 2:
        return list(prompts)
    shift = int(rng.integers(1, n))
    order = rng.permutation(n)
    shown = [""] * n
    for k in range(n):
        shown[order[k]] = prompts[order[(k + shift) % n]]
    return shown


def run_episodes(
    policy: PolicyFn,
    make_envs: Callable[[int], Any],
    episodes: int,
    num_envs: int,
    seed: int,
    greedy: bool = False,
    prompt_transform: PromptTransform | None = None,
    on_episode: Callable[[int], None] | None = None,
) -> EpisodeResults:
    """Play ``episodes`` episodes spread over ``num_envs`` envs and return their outcomes.

    Each env contributes a fixed quota of its first episodes (not "the first N to finish", which
    would favour short, i.e. successful, episodes). ``make_envs(n)`` builds an EnvBatch of n envs
    (seeded by the caller). Actions are sampled from the policy (as in the paper) with a generator
    seeded by ``seed``, or argmax when greedy.
    """
    num_envs = max(1, min(num_envs, episodes))
    quota = [episodes // num_envs + (1 if i < episodes % num_envs else 0) for i in range(num_envs)]
    done = [0] * num_envs
    envs = make_envs(num_envs)
    rng = np.random.default_rng([seed, 0xE7A1])
    results = EpisodeResults()
    while results.n < episodes:
        prompts = envs.prompts()
        shown = prompt_transform(prompts, rng) if prompt_transform else prompts
        logp = np.asarray(_to_numpy(policy(shown)), dtype=np.float64)
        actions = _choose(logp, rng, greedy)
        step = envs.step(actions)
        for info in step.episodes:
            i = info.env_index
            if done[i] >= quota[i]:
                continue
            done[i] += 1
            results.success.append(float(info.success))
            results.returns.append(float(info.return_))
            results.lengths.append(int(info.length))
            results.kinds.append(str(info.task_kind or ""))
            if on_episode is not None:
                on_episode(results.n)
    envs.close()
    return results


def _choose(logp: np.ndarray, rng: np.random.Generator, greedy: bool) -> Sequence[int]:
    if greedy:
        return logp.argmax(axis=1).tolist()
    probs = np.exp(logp - logp.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(len(logp))[:, None]
    return np.minimum((u > cdf).sum(axis=1), logp.shape[1] - 1).tolist()


def _to_numpy(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().float().cpu().numpy()
    return value
