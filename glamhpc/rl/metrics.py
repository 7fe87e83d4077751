"""The metrics of one update: episodes, PPO statistics, throughput, FLOPs and MFU."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from glamhpc.config import Config
from glamhpc.distributed import unwrap
from glamhpc.policy.flops import peak_flops, update_cost
from glamhpc.policy.shapes import T5Shape
from glamhpc.rl.rollout import EpisodeStats, Rollout

if TYPE_CHECKING:
    from glamhpc.policy.glam import GlamPolicy


def device_peak_flops(cfg: Config, device: torch.device) -> float | None:
    """Peak FLOP/s of one device: the config's figure, a known GPU's, or None (no MFU)."""
    if cfg.train.peak_tflops:
        return cfg.train.peak_tflops * 1e12
    if device.type == "cuda":
        return peak_flops(torch.cuda.get_device_name(device))
    return None


def update_metrics(
    cfg: Config,
    policy: nn.Module,
    shape: T5Shape,
    action_tokens: float,
    num_actions: int,
    rollout: Rollout,
    episodes: EpisodeStats,
    times: dict[str, float],
    peak_total: float | None,
) -> dict[str, float]:
    """Everything measured about one update except the PPO statistics and update health.

    ``times``: elapsed (rollout + update), rollout and comm seconds; ``peak_total``: peak
    FLOP/s of all ranks together.
    """
    transitions = cfg.env.num_envs * cfg.ppo.steps_per_env
    # The policy just tokenised these prompts: its cache answers without re-tokenising.
    prompts = rollout.buffer.prompts[0]
    tokenized = cast("GlamPolicy", unwrap(policy)).tokenize(prompts)
    prompt_tokens = float(sum(len(ids) for ids in tokenized) / len(prompts))
    cost = update_cost(
        shape,
        prompt_tokens=prompt_tokens,
        action_tokens=action_tokens,
        num_actions=num_actions,
        transitions=transitions,
        epochs=cfg.ppo.epochs,
    )
    elapsed = times["elapsed"]
    return {
        **episodes.metrics(),
        "env_steps_per_s": transitions / elapsed,
        **cost.metrics(elapsed, peak_total),
        "time/rollout_s": times["rollout"],
        "time/update_s": elapsed - times["rollout"],
        "time/comm_s": times["comm"],
        "prompt_tokens_mean": prompt_tokens,
    }
