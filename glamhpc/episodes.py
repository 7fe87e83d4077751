"""Run a policy for a fixed number of episodes on deterministic seeds (evaluation core).

Shared by `glamhpc eval`, the learning benchmark and the baselines. A policy here is any function
from prompts to log-probabilities over the candidate actions ([B, K] tensor or array); the random
agent and the blind control are policies like the trained one, so all are measured identically.
Agents that read the environments themselves (the BabyAI bot) implement `EnvAgent` instead.

Episodes are identified by (stream, number): env ``stream`` is the EnvBatch's *global* env index
(its reset seeds derive from it) and ``number`` counts that env's episodes. Action sampling draws
from one random generator per stream, so an episode's outcome depends only on its stream, never on
which other envs shared the batch: splitting the streams over ranks or array tasks and merging the
results gives exactly the episodes of one unsplit run (see `glamhpc.evaluate.shards`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

PolicyFn = Callable[[list[str]], Any]
PromptTransform = Callable[[list[str], np.random.Generator], list[str]]

# Upstream test envs use seeds 1e9 * seed + i: disjoint from every training seed.
TEST_SEED_BASE = 1_000_000_000
# Salt of the sampling generators, so they never coincide with a generator seeded by `seed` alone.
_SAMPLING_SALT = 0xE7A1


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

    @classmethod
    def from_episodes(cls, episodes: Sequence[Episode]) -> EpisodeResults:
        """Column view of a list of episodes (same order)."""
        return cls(
            success=[float(e.success) for e in episodes],
            returns=[e.return_ for e in episodes],
            lengths=[e.length for e in episodes],
            kinds=[e.task_kind for e in episodes],
        )


@dataclass(frozen=True)
class Episode:
    """One finished episode, identified independently of how envs were batched or sharded.

    Attributes:
        stream: global env index (``EnvBatch.global_index``): its reset seeds derive from it.
        number: which of that env's episodes (0, 1, ...).
        success: the episode ended on success (return > 0).
        return_: sum of the raw (unscaled) env rewards.
        length: env steps.
        task_kind: task kind of the episode (``goto``, ``pickup``, ... or minigrid's class name).
    """

    stream: int
    number: int
    success: bool
    return_: float
    length: int
    task_kind: str


@runtime_checkable
class EnvAgent(Protocol):
    """A policy that reads the environments, not only the prompts (e.g. the BabyAI bot)."""

    def begin(self, envs: Any) -> None:
        """Called once with the EnvBatch before the first step."""

    def logprobs(self, envs: Any, active: list[int], prompts: list[str]) -> Any:
        """Log-probabilities [len(active), K] for the envs ``active`` (prompts in that order)."""

    def after_step(self, actions: Sequence[int], step: Any) -> None:
        """Called after every ``envs.step(actions)`` with its StepResult (auto-resets included)."""


class _PromptAgent:
    """A plain prompts -> log-probabilities policy seen as an `EnvAgent`."""

    def __init__(self, policy: PolicyFn) -> None:
        self.policy = policy

    def begin(self, envs: Any) -> None:
        pass

    def logprobs(self, envs: Any, active: list[int], prompts: list[str]) -> Any:
        return self.policy(prompts)

    def after_step(self, actions: Sequence[int], step: Any) -> None:
        pass


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


def stream_quotas(episodes: int, num_streams: int) -> list[int]:
    """Episodes each env stream plays: ``episodes`` spread as evenly as possible.

    Stream ``g`` plays its first ``quota[g]`` episodes, i.e. episode ``i`` of the evaluation is
    episode ``i // num_streams`` of stream ``i % num_streams``.
    """
    if episodes < 0 or num_streams < 1:
        raise ValueError(f"need episodes >= 0 and num_streams >= 1, got {episodes}, {num_streams}")
    return [
        episodes // num_streams + (1 if g < episodes % num_streams else 0)
        for g in range(num_streams)
    ]


def sampling_rng(seed: int, stream: int) -> np.random.Generator:
    """Action-sampling generator of env stream ``stream`` (independent of batch composition)."""
    return np.random.default_rng([seed, _SAMPLING_SALT, stream])


def play_episodes(
    policy: PolicyFn | EnvAgent,
    envs: Any,
    quotas: Sequence[int],
    seed: int,
    greedy: bool = False,
    prompt_transform: PromptTransform | None = None,
    on_episode: Callable[[int], None] | None = None,
) -> list[Episode]:
    """Play the first ``quotas[i]`` episodes of env ``i`` of the EnvBatch ``envs``.

    Each env contributes a fixed quota of its first episodes (not "the first N to finish", which
    would favour short, i.e. successful, episodes). Actions are sampled from the policy (as in the
    paper) with one generator per global env stream seeded by ``(seed, stream)``, or argmax when
    ``greedy``. Envs that have played their quota keep stepping (the batch steps together) but
    are no longer scored, so the tail of an evaluation costs fewer LLM forwards.
    ``prompt_transform`` sees every env's prompt (the blind control shuffles between envs) with
    a batch-level generator. Returns the episodes in the order they finished; ``on_episode`` is
    called with the running count. The caller closes ``envs``.
    """
    if len(quotas) != envs.num_envs:
        raise ValueError(f"{len(quotas)} quotas for {envs.num_envs} envs")
    total = int(sum(quotas))
    done = [0] * envs.num_envs
    rngs = [sampling_rng(seed, envs.global_index(i)) for i in range(envs.num_envs)]
    batch_rng = np.random.default_rng([seed, _SAMPLING_SALT])
    agent = policy if isinstance(policy, EnvAgent) else _PromptAgent(policy)
    agent.begin(envs)
    played: list[Episode] = []
    while len(played) < total:
        active = [i for i in range(envs.num_envs) if done[i] < quotas[i]]
        prompts = envs.prompts()
        if prompt_transform is not None:
            prompts = prompt_transform(prompts, batch_rng)
        shown = [prompts[i] for i in active]
        raw = agent.logprobs(envs, active, shown)
        logp = np.asarray(_to_numpy(raw), dtype=np.float64)
        chosen = _choose(logp, [rngs[i] for i in active], greedy)
        # Finished envs run candidate 0; their episodes are not recorded.
        actions = [0] * envs.num_envs
        for i, a in zip(active, chosen, strict=True):
            actions[i] = a
        step = envs.step(actions)
        agent.after_step(actions, step)
        for info in step.episodes:
            i = info.env_index
            if done[i] >= quotas[i]:
                continue
            played.append(
                Episode(
                    stream=envs.global_index(i),
                    number=done[i],
                    success=bool(info.success),
                    return_=float(info.return_),
                    length=int(info.length),
                    task_kind=str(info.task_kind or ""),
                )
            )
            done[i] += 1
            if on_episode is not None:
                on_episode(len(played))
    return played


def run_episodes(
    policy: PolicyFn | EnvAgent,
    make_envs: Callable[[int], Any],
    episodes: int,
    num_envs: int,
    seed: int,
    greedy: bool = False,
    prompt_transform: PromptTransform | None = None,
    on_episode: Callable[[int], None] | None = None,
) -> EpisodeResults:
    """Play ``episodes`` episodes spread over ``num_envs`` envs and return their outcomes.

    ``make_envs(n)`` builds an EnvBatch of n envs (seeded by the caller); see `play_episodes`
    for the quotas and the sampling.
    """
    num_envs = max(1, min(num_envs, episodes))
    envs = make_envs(num_envs)
    try:
        played = play_episodes(
            policy,
            envs,
            stream_quotas(episodes, num_envs),
            seed,
            greedy=greedy,
            prompt_transform=prompt_transform,
            on_episode=on_episode,
        )
    finally:
        envs.close()
    return EpisodeResults.from_episodes(played)


def _choose(logp: np.ndarray, rngs: Sequence[np.random.Generator], greedy: bool) -> list[int]:
    if greedy:
        return [int(a) for a in logp.argmax(axis=1)]
    probs = np.exp(logp - logp.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = np.array([rng.random() for rng in rngs])[:, None]
    return np.minimum((u > cdf).sum(axis=1), logp.shape[1] - 1).tolist()


def _to_numpy(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().float().cpu().numpy()
    return value
