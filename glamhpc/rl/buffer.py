"""Rollout storage and generalised advantage estimation (pure tensor code).

Auto-reset semantics (gymnasium-style, as EnvBatch implements them): when env i finishes at step t,
`dones[t, i]` is True and the prompt stored at t+1 already belongs to the NEXT episode. So the
value at t+1 must not bootstrap step t: the `(1 - dones[t])` mask below cuts it. Truncation at
max_steps is treated as termination (no bootstrap), as upstream GLAM does; BabyAI gives reward 0
on timeout so this only affects the value target of the last steps of failed episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda) advantages and returns.

    Args:
        rewards: [T, N] reward received after the action at step t.
        values: [T, N] value estimate of the state at step t.
        dones: [T, N] True when the episode ended with the action at step t.
        last_values: [N] value of the state after the last step (bootstraps unfinished episodes).
    Returns:
        (advantages [T, N], returns [T, N]) with returns = advantages + values.
    """
    if rewards.shape != values.shape or rewards.shape != dones.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and dones "
            f"{tuple(dones.shape)} must all be [T, N]"
        )
    if last_values.shape != rewards.shape[1:]:
        raise ValueError(f"last_values must be [N]={tuple(rewards.shape[1:])}")
    steps = rewards.shape[0]
    not_done = 1.0 - dones.to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(steps)):
        delta = rewards[t] + gamma * next_values * not_done[t] - values[t]
        running = delta + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
        next_values = values[t]
    return advantages, advantages + values


@dataclass
class RolloutBuffer:
    """One rank's rollout, T steps x N envs; prompts kept as strings (the LLM re-scores them)."""

    steps: int
    num_envs: int
    prompts: list[list[str]] = field(default_factory=list)
    actions: torch.Tensor = field(init=False)
    logprobs: torch.Tensor = field(init=False)
    values: torch.Tensor = field(init=False)
    rewards: torch.Tensor = field(init=False)
    dones: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.steps, self.num_envs)
        self.actions = torch.zeros(shape, dtype=torch.long)
        self.logprobs = torch.zeros(shape)
        self.values = torch.zeros(shape)
        self.rewards = torch.zeros(shape)
        self.dones = torch.zeros(shape, dtype=torch.bool)
        self.prompts = []

    @property
    def pos(self) -> int:
        return len(self.prompts)

    def add(
        self,
        prompts: list[str],
        actions: torch.Tensor,
        logprobs: torch.Tensor,
        values: torch.Tensor,
        rewards: torch.Tensor,
        dones: torch.Tensor,
    ) -> None:
        t = self.pos
        if t >= self.steps:
            raise IndexError("rollout buffer is full")
        if len(prompts) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} prompts, got {len(prompts)}")
        self.prompts.append(list(prompts))
        self.actions[t] = actions
        self.logprobs[t] = logprobs
        self.values[t] = values
        self.rewards[t] = rewards
        self.dones[t] = dones

    def flat_prompts(self) -> list[str]:
        """Prompts in [T, N] row-major order, matching ``tensor.reshape(-1)``."""
        return [p for row in self.prompts for p in row]
