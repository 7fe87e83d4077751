"""TextEnv: a BabyAI level seen through text (descriptions, prompt) with GLAM's reward scaling.

The wrapper adds what GLAM's policy consumes on top of a minigrid BabyAI level:

- ``obs["descriptions"]``: the sentences of ``envs.text.describe`` for the egocentric view and
  the carried object (spec section 2);
- ``env.prompt``: the exact prompt the LLM scores its candidates against (spec section 6), built
  from a sliding history window; built lazily because a trainer asks for it once per step at
  most, and benchmarks or bots not at all;
- actions are candidate indices into an action space (``envs.actions``), mapped to minigrid ids
  (the augmented space's distractors run minigrid's no-op ``done``);
- the reward is scaled (x20 by default, as GLAM trains); ``info["raw_reward"]`` keeps minigrid's
  reward and ``info["success"]`` tells whether the episode ended on success.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, SupportsInt, cast

import gymnasium as gym

from glamhpc.envs.actions import action_texts, env_actions
from glamhpc.envs.levels import (
    LEVEL_IDS,
    TaskSampling,
    level_language,
    resolve_level,
    silence_generation,
)
from glamhpc.envs.prompt import History
from glamhpc.envs.text import describe

__all__ = ["TextEnv", "carried", "make_level", "task_kind_of"]


def make_level(
    level: str,
    task_sampling: TaskSampling = "per_episode",
    instance_seed: int | None = None,
    level_kwargs: Mapping[str, Any] | None = None,
) -> gym.Env[Any, Any]:
    """Instantiate a BabyAI level by any accepted name (see ``levels.resolve_level``).

    ``task_sampling`` and ``instance_seed`` only apply to glamhpc's levels (minigrid's levels
    have a single task family and take neither). ``level_kwargs`` go to the level's constructor
    (e.g. ``{"task_kinds": ["open"]}``). The passive env checker is off: it only re-validates
    minigrid's spaces, at a measurable cost on every new env.
    """
    level_id = resolve_level(level)
    kwargs: dict[str, Any] = dict(level_kwargs or {})
    if level_id in LEVEL_IDS:
        kwargs.update(task_sampling=task_sampling, instance_seed=instance_seed)
    return gym.make(level_id, disable_env_checker=True, **kwargs)


def carried(env: gym.Env[Any, Any]) -> tuple[str, str] | None:
    """``(type, color)`` of the object the agent carries, the form ``describe`` takes."""
    obj = env.unwrapped.carrying  # type: ignore[attr-defined]
    return None if obj is None else (obj.type, obj.color)


def task_kind_of(env: gym.Env[Any, Any]) -> str:
    """Task kind of the current episode; minigrid's levels are named after their level."""
    base = env.unwrapped
    kind = getattr(base, "task_kind", None)
    if kind is not None:
        return str(kind)
    return type(base).__name__


class TextEnv(gym.Wrapper[dict[str, Any], int, dict[str, Any], int]):
    """A BabyAI level with text observations, text actions and GLAM's reward scaling.

    Args:
        level: level name: ``MixedTrainLocal``, ``BabyAI-MixedTrainLocal`` or a full gym id.
        seed: seed of the first ``reset()`` without an explicit seed; later resets continue the
            env's RNG (gymnasium semantics). ``None`` seeds from OS entropy.
        action_space: ``standard``, ``restricted``, ``augmented`` or ``synonyms``.
        history: observations kept in the prompt (the paper uses 3; ablations 1/6/9).
        reward_scale: factor on minigrid's reward (GLAM trains on ``20 * reward``).
        language: of descriptions, prompt and candidates; ``None`` follows the level
            (GoToFrench -> french, everything else english).
        task_sampling: ``per_episode`` or ``per_instance`` (upstream parity), glamhpc levels only.
        fix_grammar: correct text instead of upstream's quirks ("an open door"; French: the
            goal's own article, no trailing space, the carried object in French words).
        instance_seed: seeds the per-instance task kind draw.
        level_kwargs: extra constructor arguments of the level, e.g. ``{"task_kinds": ["open"]}``.

    Observations are minigrid's dict plus ``descriptions`` (list of sentences). ``info`` of
    ``step`` holds ``raw_reward``, ``success``, ``task_kind`` and ``env_action``; ``info`` of
    ``reset`` holds ``task_kind`` and ``max_steps``.
    """

    def __init__(
        self,
        level: str,
        seed: int | None = None,
        action_space: str = "standard",
        history: int = 3,
        reward_scale: float = 20.0,
        language: str | None = None,
        task_sampling: TaskSampling = "per_episode",
        fix_grammar: bool = False,
        instance_seed: int | None = None,
        level_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        env = make_level(level, task_sampling, instance_seed, level_kwargs)
        super().__init__(env)
        self.level_id: str = env.spec.id if env.spec is not None else resolve_level(level)
        self.language: str = language or level_language(self.level_id)
        self.action_space_name = action_space
        self.action_texts: list[str] = action_texts(action_space, self.language)
        self.env_actions: list[int] = env_actions(action_space)
        # Discrete is typed Space[np.int64]; it contains python ints, this env's action type.
        self.action_space = cast(
            "gym.spaces.Space[int]", gym.spaces.Discrete(len(self.action_texts))
        )
        self.reward_scale = float(reward_scale)
        self.fix_grammar = fix_grammar
        self._first_seed = seed
        self._history = History(history)
        self._prompt: str | None = None
        self.descriptions: list[str] = []
        self.mission: str = ""
        self.task_kind: str = ""

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode; the first reset without a seed uses the constructor's seed."""
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        with silence_generation():  # minigrid's own levels print every rejected sample
            obs, info = self.env.reset(seed=seed, options=options)
        self.mission = obs["mission"]
        self.task_kind = task_kind_of(self.env)
        self.descriptions = self._describe(obs)
        obs["descriptions"] = self.descriptions
        self._history.reset(self.descriptions)
        self._prompt = None
        info = dict(info)
        info["task_kind"] = self.task_kind
        info["max_steps"] = self.env.unwrapped.max_steps  # type: ignore[attr-defined]
        return obs, info

    def step(self, action: SupportsInt) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Run candidate ``action`` (an index into ``action_texts``)."""
        index = int(action)
        if not 0 <= index < len(self.env_actions):
            raise ValueError(
                f"action {index} out of range for the {self.action_space_name!r} space "
                f"({len(self.env_actions)} candidates: {self.action_texts})"
            )
        env_action = self.env_actions[index]
        obs, raw_reward, terminated, truncated, info = self.env.step(env_action)
        self.descriptions = self._describe(obs)
        obs["descriptions"] = self.descriptions
        self._history.push(self.action_texts[index], self.descriptions)
        self._prompt = None
        raw = float(raw_reward)
        info = dict(info)
        info["raw_reward"] = raw
        # BabyAI rewards only success (1 - 0.9 * t / T > 0), so a positive reward is a success.
        info["success"] = bool(terminated and raw > 0)
        info["task_kind"] = self.task_kind
        info["env_action"] = env_action
        return obs, raw * self.reward_scale, bool(terminated), bool(truncated), info

    # ------------------------------------------------------------------ text

    @property
    def prompt(self) -> str:
        """The prompt the LLM sees now (ends with ``"Action {k}: "``); cached until ``step``."""
        if self._prompt is None:
            self._prompt = self._history.prompt(
                self.mission, self.action_texts, self.language, self.fix_grammar
            )
        return self._prompt

    @property
    def history(self) -> History:
        """The sliding window of observations and actions behind ``prompt``."""
        return self._history

    def _describe(self, obs: dict[str, Any]) -> list[str]:
        return describe(obs["image"], carried(self.env), self.language, self.fix_grammar)
