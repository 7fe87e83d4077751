"""One rollout: every env of this rank acts ``steps`` times with the current policy.

Actions come from the keyed sampler (`glamhpc.policy.sampling`): the uniform of global env i at
step t of update u is a function of (seed, u, t, i) only, so a resumed run and an N-rank run
pick exactly the actions an uninterrupted single rank would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from glamhpc.policy.sampling import sample_training_actions
from glamhpc.rl.buffer import RolloutBuffer
from glamhpc.rl.ppo import ScoreFn


class FinishedEpisode(Protocol):
    """What the env batch reports for an episode that ended (glamhpc.envs.batch.EpisodeInfo)."""

    # Read-only members: the env batch reports frozen dataclasses.
    @property
    def success(self) -> bool: ...
    @property
    def return_(self) -> float: ...
    @property
    def length(self) -> int: ...
    @property
    def task_kind(self) -> str | None: ...


class StepOutcome(Protocol):
    @property
    def rewards(self) -> np.ndarray: ...
    @property
    def dones(self) -> np.ndarray: ...
    @property
    def episodes(self) -> Sequence[FinishedEpisode]: ...


class Envs(Protocol):
    """The part of `glamhpc.envs.batch.EnvBatch` a rollout uses (rl does not import envs)."""

    def prompts(self) -> list[str]: ...

    def step(self, actions: list[int]) -> StepOutcome: ...


@dataclass
class EpisodeStats:
    """Episodes finished during rollouts: the training layer's one episode record."""

    success: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, info: FinishedEpisode) -> None:
        self.success.append(float(info.success))
        self.returns.append(float(info.return_))
        self.lengths.append(float(info.length))
        self.kinds.append(str(info.task_kind or "all"))

    @staticmethod
    def merge(parts: list[EpisodeStats]) -> EpisodeStats:
        out = EpisodeStats()
        for part in parts:
            out.success += part.success
            out.returns += part.returns
            out.lengths += part.lengths
            out.kinds += part.kinds
        return out

    def metrics(self) -> dict[str, float]:
        if not self.success:
            return {"episodes": 0.0}
        m = {
            "episodes": float(len(self.success)),
            "success_rate": float(np.mean(self.success)),
            "return_mean": float(np.mean(self.returns)),
            "episode_length_mean": float(np.mean(self.lengths)),
        }
        for kind in sorted(set(self.kinds) - {"all"}):
            vals = [s for s, k in zip(self.success, self.kinds, strict=True) if k == kind]
            m[f"success_rate/{kind}"] = float(np.mean(vals))
        return m


@dataclass
class Rollout:
    buffer: RolloutBuffer
    last_values: torch.Tensor
    episodes: EpisodeStats


@dataclass(frozen=True)
class RolloutKey:
    """Where this rank's actions come from in the keyed sampler."""

    seed: int
    update: int
    env_offset: int
    num_envs_global: int


def collect(
    score: ScoreFn,
    envs: Envs,
    steps: int,
    num_envs_local: int,
    key: RolloutKey,
    stop_requested: Callable[[], bool],
) -> Rollout | None:
    """One rollout; None when a stop was requested (the rollout is abandoned)."""
    buffer = RolloutBuffer(steps, num_envs_local)
    stats = EpisodeStats()
    prompts = envs.prompts()
    with torch.no_grad():
        for t in range(steps):
            logprobs, values = score(prompts)
            actions = sample_training_actions(
                logprobs, key.seed, key.update, t, key.env_offset, key.num_envs_global
            )
            result = envs.step(actions.tolist())
            for info in result.episodes:
                stats.add(info)
            buffer.add(
                prompts,
                actions,
                logprobs.gather(1, actions[:, None]).squeeze(1),
                values,
                torch.as_tensor(result.rewards, dtype=torch.float32),
                torch.as_tensor(result.dones),
            )
            prompts = envs.prompts()
            if stop_requested():
                return None
        _, last_values = score(prompts)
    return Rollout(buffer, last_values, stats)
