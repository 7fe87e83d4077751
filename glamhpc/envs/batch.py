"""EnvBatch: N text environments stepped in-process, auto-reset, exactly resumable.

Why in-process: a minigrid step plus its text costs ~0.1 ms, far less than a subprocess round
trip, and the LLM forward dominates a GLAM step anyway (subprocess vector envs do not pay off on
few cores, see STACK_NOTES). Why not gymnasium's vector envs: they auto-reset on the NEXT step
and drop that step's action, while PPO here wants the next episode's first prompt right away.

Seeding scheme (reproducible, independent of how envs are split across ranks):

- env ``i`` of a batch has the GLOBAL index ``g = env_seed_offset + i``; rank ``r`` of a run with
  ``n`` envs per rank passes ``env_seed_offset = r * n``, so a 2-rank run with 2 x 16 envs plays
  exactly the episodes of a 1-rank run with 32 envs;
- episode ``k`` of global env ``g`` is reset with ``episode_seed(seed, g, k)``, a 63-bit integer
  from ``numpy.random.SeedSequence(seed, spawn_key=(g, k))``: statistically independent streams
  for every (env, episode) and no collisions between nearby seeds (upstream GLAM seeded train env
  ``i`` once with ``100 * seed + i``, which overlaps as soon as there are 100 envs);
- with ``task_sampling="per_instance"`` the env's single task kind is drawn from
  ``instance_seed(seed, g)`` (``spawn_key=(g,)``).

Exact resume without pickle: ``state_dict()`` is plain JSON (per env: global index, episode
counter, candidate indices taken this episode). ``load_state_dict`` resets each env with its
episode seed and replays those actions; minigrid is deterministic given the seed and the actions,
so environments, histories and prompts come back bit-identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, SupportsInt

import numpy as np

from glamhpc.envs.levels import TaskSampling, resolve_level
from glamhpc.envs.textenv import TextEnv

__all__ = [
    "STATE_FORMAT",
    "EnvBatch",
    "EpisodeInfo",
    "StepResult",
    "episode_seed",
    "instance_seed",
    "merge_state_dicts",
]

STATE_FORMAT = "glamhpc.EnvBatch/1"
_SEED_MASK = (1 << 63) - 1  # keep seeds within int64 for any consumer (JSON, torch, numpy)
# Settings that change which episodes are played or what an action index means: a state saved
# under other values cannot be replayed.
_STATE_KEYS = ("level", "seed", "action_space", "task_sampling", "level_kwargs")


def episode_seed(seed: int, env_index: int, episode: int) -> int:
    """Reset seed of episode ``episode`` of global env ``env_index`` in a run seeded ``seed``."""
    state = np.random.SeedSequence(seed, spawn_key=(env_index, episode)).generate_state(
        1, np.uint64
    )
    return int(state[0]) & _SEED_MASK


def instance_seed(seed: int, env_index: int) -> int:
    """Seed of the per-instance task-kind draw of global env ``env_index``."""
    state = np.random.SeedSequence(seed, spawn_key=(env_index,)).generate_state(1, np.uint64)
    return int(state[0]) & _SEED_MASK


@dataclass(frozen=True)
class EpisodeInfo:
    """Summary of an episode that ended during a ``step`` call."""

    env_index: int  # index in this batch (add env_seed_offset for the global index)
    success: bool
    return_: float  # sum of raw (unscaled) env rewards
    length: int  # env steps
    task_kind: str


@dataclass(frozen=True)
class StepResult:
    """What one batched step returns; rewards are scaled by ``reward_scale``."""

    rewards: np.ndarray  # float32 [N]
    dones: np.ndarray  # bool [N]: the episode ended (success, failure or step limit)
    episodes: list[EpisodeInfo]  # one per env whose episode ended in this step
    truncated: np.ndarray  # bool [N]: ended by the step limit (for bootstrapping, if wanted)


class EnvBatch:
    """``num_envs`` TextEnvs with auto-reset, per-env prompt history and JSON state.

    Args mirror ``TextEnv`` (``level_kwargs`` must be JSON-serialisable); see the module
    docstring for ``seed`` and ``env_seed_offset``.
    ``step`` auto-resets finished envs in the same call, so ``prompts()`` after a step where env
    ``i`` finished returns the first prompt of its next episode (only ``Observation 0``).
    """

    def __init__(
        self,
        level: str,
        num_envs: int,
        seed: int,
        action_space: str = "standard",
        history: int = 3,
        reward_scale: float = 20.0,
        language: str | None = None,
        task_sampling: TaskSampling = "per_episode",
        env_seed_offset: int = 0,
        fix_grammar: bool = False,
        level_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if seed < 0 or env_seed_offset < 0:
            raise ValueError("seed and env_seed_offset must be non-negative integers")
        self.level_id = resolve_level(level)
        self.num_envs = num_envs
        self.seed = int(seed)
        self.env_seed_offset = int(env_seed_offset)
        self.action_space = action_space
        self.task_sampling: TaskSampling = task_sampling
        # Normalised through JSON so that a restored state compares equal (tuples -> lists).
        self.level_kwargs: dict[str, Any] = json.loads(json.dumps(dict(level_kwargs or {})))
        self.envs: list[TextEnv] = [
            TextEnv(
                self.level_id,
                action_space=action_space,
                history=history,
                reward_scale=reward_scale,
                language=language,
                task_sampling=task_sampling,
                fix_grammar=fix_grammar,
                instance_seed=instance_seed(self.seed, self.env_seed_offset + i),
                level_kwargs=self.level_kwargs,
            )
            for i in range(num_envs)
        ]
        self.language = self.envs[0].language
        self.reward_scale = float(reward_scale)
        self._episodes = [0] * num_envs
        self._actions: list[list[int]] = [[] for _ in range(num_envs)]
        self._returns = [0.0] * num_envs
        for i in range(num_envs):
            self._begin_episode(i)

    # ------------------------------------------------------------------ stepping

    @property
    def action_texts(self) -> list[str]:
        """Candidate strings, in action-index order (the same for every env)."""
        return list(self.envs[0].action_texts)

    def prompts(self) -> list[str]:
        """Current prompt of each env (built on demand, cached until its next step)."""
        return [env.prompt for env in self.envs]

    def missions(self) -> list[str]:
        """Current mission of each env."""
        return [env.mission for env in self.envs]

    def images(self) -> np.ndarray:
        """Current symbolic view of each env, minigrid's ``obs["image"]``: uint8 [N, 7, 7, 3]
        (object, colour, state per cell; the Symbolic-PPO baseline's input). Recomputed from the
        grid (``gen_obs`` is what minigrid's step returns; it draws no randomness)."""
        views = [env.unwrapped.gen_obs()["image"] for env in self.envs]  # type: ignore[attr-defined]
        return np.stack(views)

    def task_kinds(self) -> list[str]:
        """Task kind of each env's current episode."""
        return [env.task_kind for env in self.envs]

    def global_index(self, env_index: int) -> int:
        """Index of env ``env_index`` across all ranks (what its seeds derive from)."""
        return self.env_seed_offset + env_index

    def step(self, action_idx: Sequence[SupportsInt] | np.ndarray) -> StepResult:
        """Run one candidate index per env; finished envs start their next episode at once."""
        actions = [int(a) for a in action_idx]
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(actions)}")
        rewards = np.empty(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        truncs = np.zeros(self.num_envs, dtype=bool)
        episodes: list[EpisodeInfo] = []
        for i, (env, action) in enumerate(zip(self.envs, actions, strict=True)):
            _, reward, terminated, truncated, info = env.step(action)
            self._actions[i].append(action)
            self._returns[i] += info["raw_reward"]
            rewards[i] = reward
            if terminated or truncated:
                dones[i] = True
                truncs[i] = truncated and not terminated
                episodes.append(
                    EpisodeInfo(
                        env_index=i,
                        success=info["success"],
                        return_=self._returns[i],
                        length=len(self._actions[i]),
                        task_kind=env.task_kind,
                    )
                )
                self._episodes[i] += 1
                self._begin_episode(i)
        return StepResult(rewards=rewards, dones=dones, episodes=episodes, truncated=truncs)

    def _begin_episode(self, i: int) -> None:
        """Reset env ``i`` to its current episode (a fresh history comes with the reset)."""
        self.envs[i].reset(seed=episode_seed(self.seed, self.global_index(i), self._episodes[i]))
        self._actions[i] = []
        self._returns[i] = 0.0

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()

    # ------------------------------------------------------------------ exact resume

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: settings plus, per env, its episode and actions so far."""
        return {
            "format": STATE_FORMAT,
            "level": self.level_id,
            "seed": self.seed,
            "action_space": self.action_space,
            "task_sampling": self.task_sampling,
            "level_kwargs": self.level_kwargs,
            "envs": [
                {
                    "index": self.global_index(i),
                    "episode": self._episodes[i],
                    # Candidate indices, not minigrid ids: several candidates share an id
                    # (augmented no-ops) but show different text in the prompt history.
                    "actions": list(self._actions[i]),
                }
                for i in range(self.num_envs)
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore exactly: reset every env with its episode seed and replay its actions.

        ``state`` may come from a batch with another ``num_envs``/``env_seed_offset`` (or be
        several ranks' states merged with ``merge_state_dicts``) as long as it holds an entry for
        each of this batch's global env indices.

        Raises:
            ValueError: wrong format, settings that change the episodes, missing envs, or
                actions that no longer replay (e.g. the level's generator changed).
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an EnvBatch state (format {state.get('format')!r})")
        mine = self.state_dict()
        diff = [
            f"{k}: saved {state.get(k)!r}, here {mine[k]!r}"
            for k in _STATE_KEYS
            if state.get(k) != mine[k]
        ]
        if diff:
            raise ValueError("EnvBatch state from different settings: " + "; ".join(diff))
        saved = {int(e["index"]): e for e in state["envs"]}
        missing = [g for g in map(self.global_index, range(self.num_envs)) if g not in saved]
        if missing:
            raise ValueError(f"EnvBatch state lacks global env indices {missing}")
        for i, env in enumerate(self.envs):
            entry = saved[self.global_index(i)]
            self._episodes[i] = int(entry["episode"])
            self._begin_episode(i)
            for action in entry["actions"]:
                _, _, terminated, truncated, info = env.step(int(action))
                self._actions[i].append(int(action))
                self._returns[i] += info["raw_reward"]
                if terminated or truncated:
                    raise ValueError(
                        f"env {self.global_index(i)} episode {self._episodes[i]} ended while "
                        "replaying its saved actions: the level no longer generates the same "
                        "episodes"
                    )


def merge_state_dicts(states: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Combine the states of several ranks' batches (same settings) into one.

    Lets a run resume with another number of ranks: every rank loads the merged state and picks
    its own global env indices.
    """
    merged: dict[str, Any] | None = None
    for state in states:
        if merged is None:
            merged = {**state, "envs": list(state["envs"])}
            continue
        for key in ("format", *_STATE_KEYS):
            if state.get(key) != merged.get(key):
                raise ValueError(f"cannot merge EnvBatch states with different {key!r}")
        merged["envs"].extend(state["envs"])
    if merged is None:
        raise ValueError("no EnvBatch state to merge")
    merged["envs"].sort(key=lambda e: int(e["index"]))
    return merged
