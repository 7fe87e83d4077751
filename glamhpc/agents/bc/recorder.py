"""Record the decisions of an agent playing through evaluation's episode player.

`Recorder` is itself an agent of the `EnvAgent` protocol (begin / logprobs / after_step,
`glamhpc.evaluate.episodes`): it wraps the agent that really plays (the BabyAI bot, or a trained
checkpoint's scorer), passes every call through, and keeps what the wrapped agent saw and did.
`play_episodes` only asks the active envs (those still within their episode quota), so exactly
the evaluated episodes are recorded; an episode's rows are handed on when it ends, with its
outcome, in the order episodes finish (deterministic for a seeded run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Rows = list[dict[str, Any]]


class Recorder:
    """Pass-through agent that hands each finished episode's rows to ``on_episode``.

    Args:
        agent: an `EnvAgent` (has ``logprobs``) or a prompt scorer (a callable).
        on_episode: called with (rows, success) when an episode of an active env ends.
    """

    def __init__(self, agent: Any, on_episode: Callable[[Rows, bool], None]) -> None:
        self.agent = agent
        self.on_episode = on_episode
        self._envs: Any = None
        self._asked: tuple[list[int], list[str]] = ([], [])
        self._pending: list[Rows] = []
        self._numbers: list[int] = []

    def begin(self, envs: Any) -> None:
        self._envs = envs
        self._pending = [[] for _ in range(envs.num_envs)]
        self._numbers = [0] * envs.num_envs
        if hasattr(self.agent, "begin"):
            self.agent.begin(envs)

    def logprobs(self, envs: Any, active: list[int], prompts: list[str]) -> Any:
        self._asked = (list(active), list(prompts))
        if hasattr(self.agent, "logprobs"):
            return self.agent.logprobs(envs, active, prompts)
        return self.agent(prompts)

    def after_step(self, actions: Sequence[int], step: Any) -> None:
        if hasattr(self.agent, "after_step"):
            self.agent.after_step(actions, step)
        envs = self._envs
        texts = list(envs.action_texts)
        active, prompts = self._asked
        for i, prompt in zip(active, prompts, strict=True):
            stream = envs.global_index(i)
            action = int(actions[i])
            self._pending[i].append(
                {
                    "prompt": prompt,
                    "candidates": texts,
                    "action": action,
                    "action_text": texts[action],
                    "episode": f"{stream}-{self._numbers[i]}",
                    "step": len(self._pending[i]),
                }
            )
        for info in step.episodes:
            i = info.env_index
            rows, self._pending[i] = self._pending[i], []
            self._numbers[i] += 1
            if rows:  # envs past their quota step on unrecorded
                success = bool(info.success)
                self.on_episode([{**r, "success": success} for r in rows], success)
