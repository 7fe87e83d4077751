"""Evaluation's episode player: a policy for a fixed number of episodes on deterministic seeds.

Shared by `glamhpc eval`, the learning benchmark and the baselines. A policy here is a
`PromptScorer` (prompts -> log-probabilities over the candidate actions, [B, K] tensor or
array); the random agent and the blind control are scorers like the trained one, so all are
measured identically. Agents that read the environments themselves (the BabyAI bot) implement
`EnvAgent` instead.

Episodes are identified by (stream, number): env ``stream`` is the EnvBatch's *global* env index
(its reset seeds derive from it) and ``number`` counts that env's episodes. Actions are picked by
the one sampler of `glamhpc.policy.sampling` from uniforms drawn from one random generator per
stream, so an episode's outcome depends only on its stream, never on which other envs shared the
batch: splitting the streams over ranks or array tasks and merging the results gives exactly
the episodes of one unsplit run (see `glamhpc.evaluate.parts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from glamhpc.policy.sampling import greedy as greedy_actions
from glamhpc.policy.sampling import sample_from_uniforms, stream_uniforms

if TYPE_CHECKING:
    from glamhpc.envs.batch import EnvBatch, StepResult

#: Log-probabilities [B, K] over the candidate actions of B prompts.
LogProbs = torch.Tensor | np.ndarray
#: Evaluation's policy: prompts -> log-probabilities over the candidates (not the trainer's
#: policy, which also returns values).
PromptScorer = Callable[[list[str]], LogProbs]
PromptTransform = Callable[[list[str], np.random.Generator], list[str]]

# Upstream test envs use seeds 1e9 * seed + i: disjoint from every training seed.
TEST_SEED_BASE = 1_000_000_000
# Salt of the sampling generators, so they never coincide with a generator seeded by `seed` alone.
_SAMPLING_SALT = 0xE7A1


@dataclass(frozen=True)
class Episode:
    """One finished episode, identified independently of how envs were batched or split.

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


@dataclass(frozen=True)
class EpisodeResults:
    """The episodes of one `run_episodes` call (in the order they finished) and their totals.

    An aggregate over `Episode` records, not a second record type: every column is derived.
    """

    episodes: tuple[Episode, ...] = field(default_factory=tuple)

    @property
    def n(self) -> int:
        return len(self.episodes)

    @property
    def success(self) -> list[float]:
        return [float(e.success) for e in self.episodes]

    @property
    def returns(self) -> list[float]:
        return [e.return_ for e in self.episodes]

    @property
    def lengths(self) -> list[int]:
        return [e.length for e in self.episodes]

    @property
    def kinds(self) -> list[str]:
        return [e.task_kind for e in self.episodes]

    def success_rate(self) -> float:
        return float(np.mean(self.success)) if self.episodes else float("nan")


@runtime_checkable
class EnvAgent(Protocol):
    """A policy that reads the environments, not only the prompts (e.g. the BabyAI bot)."""

    def begin(self, envs: EnvBatch) -> None:
        """Called once with the EnvBatch before the first step."""

    def logprobs(self, envs: EnvBatch, active: list[int], prompts: list[str]) -> LogProbs:
        """Log-probabilities [len(active), K] for the envs ``active`` (prompts in that order)."""

    def after_step(self, actions: Sequence[int], step: StepResult) -> None:
        """Called after every ``envs.step(actions)`` with its StepResult (auto-resets included)."""


class _ScorerAgent:
    """A `PromptScorer` seen as an `EnvAgent`."""

    def __init__(self, scorer: PromptScorer) -> None:
        self.scorer = scorer

    def begin(self, envs: EnvBatch) -> None:
        pass

    def logprobs(self, envs: EnvBatch, active: list[int], prompts: list[str]) -> LogProbs:
        return self.scorer(prompts)

    def after_step(self, actions: Sequence[int], step: StepResult) -> None:
        pass


def uniform_policy(num_actions: int) -> PromptScorer:
    logp = np.full(num_actions, -np.log(num_actions))

    def score(prompts: list[str]) -> np.ndarray:
        return np.tile(logp, (len(prompts), 1))

    return score


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
    policy: PromptScorer | EnvAgent,
    envs: EnvBatch,
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
    agent = policy if isinstance(policy, EnvAgent) else _ScorerAgent(policy)
    agent.begin(envs)
    played: list[Episode] = []
    while len(played) < total:
        active = [i for i in range(envs.num_envs) if done[i] < quotas[i]]
        prompts = envs.prompts()
        if prompt_transform is not None:
            prompts = prompt_transform(prompts, batch_rng)
        shown = [prompts[i] for i in active]
        chosen = _choose(agent.logprobs(envs, active, shown), [rngs[i] for i in active], greedy)
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
    policy: PromptScorer | EnvAgent,
    make_envs: Callable[[int], EnvBatch],
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
    return EpisodeResults(tuple(played))


def _choose(logprobs: LogProbs, rngs: Sequence[np.random.Generator], greedy: bool) -> list[int]:
    """Actions of the active envs: argmax, or the shared sampler fed one uniform per stream.

    Sampling draws exactly one uniform from each active stream's own generator per step (none
    when greedy), so a stream's actions never depend on which envs share its batch.
    """
    # float64 on CPU: the same choice whatever device or dtype the model scored in.
    logp = torch.as_tensor(logprobs).detach().cpu().double()
    if greedy:
        return [int(a) for a in greedy_actions(logp)]
    return [int(a) for a in sample_from_uniforms(logp, stream_uniforms(rngs))]
