"""The PPO update, readable top to bottom (CleanRL style).

Every hyperparameter is documented once, in ``glamhpc.config.PPOConfig``. This module knows nothing
about processes: the caller passes ``all_reduce_sum`` (identity on one rank) and the rank's slice of
each minibatch. Minibatches are drawn from ONE global permutation of all transitions of all ranks
(seeded by seed and update), so N ranks see exactly the minibatches a single rank would, and the
loss is scaled so that averaging gradients over ranks (DDP/FSDP) gives the single-rank gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from glamhpc.config import PPOConfig
from glamhpc.rl.buffer import RolloutBuffer, compute_gae

ScoreFn = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
"""prompts -> (log-probs over the candidate actions [B, K], values [B]): the policy as the loop
calls it (the rollout under no_grad, the update with gradients)."""


class NonFiniteError(RuntimeError):
    """A NaN/inf loss, gradient norm or weight: the run must stop (one line, no traceback).

    Raised on every rank together (the check is agreed through ``all_reduce_sum``), so no rank is
    left waiting in a collective; the trainer then writes no checkpoint, no ``DONE`` and no export.
    """


@dataclass(frozen=True)
class Minibatch:
    """One minibatch as seen by one rank."""

    local_indices: np.ndarray  # indices into this rank's flattened [T * N_local] rollout
    global_count: int  # transitions in the minibatch across all ranks


def minibatch_schedule(
    steps: int,
    num_envs_global: int,
    env_offset: int,
    num_envs_local: int,
    minibatch_size: int,
    epochs: int,
    seed: int,
    update: int,
) -> list[list[Minibatch]]:
    """Per epoch, the minibatches of this rank: a pure function of its arguments.

    The permutation is over global transitions t * N_global + env, independent of the world size;
    each rank keeps the entries of its own envs. A last short minibatch is kept (no data dropped).
    """
    total = steps * num_envs_global
    schedule: list[list[Minibatch]] = []
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, update, epoch, 0x9E3779B9])
        perm = rng.permutation(total)
        epoch_batches: list[Minibatch] = []
        for start in range(0, total, minibatch_size):
            chunk = perm[start : start + minibatch_size]
            t, env = np.divmod(chunk, num_envs_global)
            mine = (env >= env_offset) & (env < env_offset + num_envs_local)
            local = t[mine] * num_envs_local + (env[mine] - env_offset)
            epoch_batches.append(Minibatch(local_indices=local, global_count=len(chunk)))
        schedule.append(epoch_batches)
    return schedule


def ppo_losses(
    new_logprobs: torch.Tensor,
    all_logprobs: torch.Tensor,
    new_values: torch.Tensor,
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
) -> dict[str, torch.Tensor]:
    """Per-sample PPO terms (shape [B] each), summed by the caller.

    new_logprobs: log pi(a|s) of the taken actions [B]; all_logprobs: [B, K] for the entropy.
    """
    for name, tensor in (("new_values", new_values), ("returns", returns)):
        # Upstream compared [B, 1] values with [B] returns and silently broadcast to [B, B].
        if tensor.dim() != 1:
            raise ValueError(f"{name} must be 1-D [B], got {tuple(tensor.shape)}")
    log_ratio = new_logprobs - old_logprobs
    ratio = log_ratio.exp()
    surrogate = -torch.min(
        advantages * ratio, advantages * ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip)
    )
    # The bare squared error, weighted once by value_coef: upstream's loss is
    # 0.5 * max(sq, sq_clipped) with 0.5 the paper's value coefficient. CleanRL also puts a 0.5
    # inside; with both, the value head trained at half of upstream's weight (issue 13).
    if cfg.clip_value:
        clipped = old_values + (new_values - old_values).clamp(-cfg.clip, cfg.clip)
        value_loss = torch.max((new_values - returns) ** 2, (clipped - returns) ** 2)
    else:
        value_loss = (new_values - returns) ** 2
    entropy = -(all_logprobs.exp() * all_logprobs).sum(-1)
    with torch.no_grad():
        approx_kl = (ratio - 1.0) - log_ratio  # low-variance KL estimator (Schulman)
        clipped_frac = ((ratio - 1.0).abs() > cfg.clip).float()
    total = surrogate + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
    return {
        "loss": total,
        "policy_loss": surrogate,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": approx_kl,
        "clip_fraction": clipped_frac,
    }


@dataclass
class RolloutBatch:
    """A rank's flattened rollout ([T * N_local] each) with advantages and returns."""

    prompts: list[str]
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def ppo_update(
    policy: ScoreFn,
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    schedule: list[list[Minibatch]],
    cfg: PPOConfig,
    world_size: int = 1,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Run epochs x minibatches of clipped-PPO gradient steps; return averaged statistics."""
    keys = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
    sums = torch.zeros(len(keys) + 1, dtype=torch.float64)  # + sample count
    grad_norms: list[float] = []
    steps_done = 0
    stop = False
    for epoch, epoch_batches in enumerate(schedule):
        for number, mb in enumerate(epoch_batches):
            idx = mb.local_indices
            weight = 1.0
            if len(idx) == 0:
                # Collectives need every rank in every backward: use one sample with zero weight.
                idx, weight = np.array([0]), 0.0
            tidx = torch.as_tensor(idx, dtype=torch.long)
            adv = batch.advantages[tidx].to(device)
            if cfg.normalize_advantages:
                adv = _normalize_global(adv, weight, all_reduce_sum)
            all_logprobs, values = policy([batch.prompts[i] for i in idx])
            actions = batch.actions[tidx].to(device)
            new_logprobs = all_logprobs.gather(1, actions[:, None]).squeeze(1)
            terms = ppo_losses(
                new_logprobs,
                all_logprobs,
                values,
                batch.logprobs[tidx].to(device),
                batch.values[tidx].to(device),
                adv,
                batch.returns[tidx].to(device),
                cfg,
            )
            # Sum over local samples / global count, x world_size because DDP/FSDP average
            # gradients over ranks: the result is the single-rank minibatch mean exactly.
            scale = weight * world_size / mb.global_count
            loss = terms["loss"].sum() * scale
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            grad_norms.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
            # Before the step: Adam would spread the NaN into every weight and its moments.
            _check_finite(
                float(loss.detach()),
                grad_norms[-1],
                f"epoch {epoch + 1}, minibatch {number + 1}",
                all_reduce_sum,
            )
            optimizer.step()
            steps_done += 1
            with torch.no_grad():
                local = [float(terms[k].sum()) * weight for k in keys] + [len(idx) * weight]
                sums += torch.tensor(local, dtype=torch.float64)
        if cfg.target_kl is not None:
            reduced = all_reduce_sum(sums.clone())
            if reduced[3] / cast("torch.Tensor | float", max(reduced[-1], 1.0)) > cfg.target_kl:
                stop = True
        if stop:
            break
    reduced = all_reduce_sum(sums)
    count = max(float(reduced[-1]), 1.0)
    stats = {k: float(reduced[i]) / count for i, k in enumerate(keys)}
    stats["grad_norm"] = float(np.mean(grad_norms)) if grad_norms else 0.0
    stats["gradient_steps"] = float(steps_done)
    return stats


@dataclass(frozen=True)
class RankSlice:
    """Which global envs this rank owns, and how ranks are combined."""

    env_offset: int
    num_envs_local: int
    num_envs_global: int
    world_size: int = 1


def update_from_rollout(
    policy: ScoreFn,
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    buffer: RolloutBuffer,
    last_values: torch.Tensor,
    cfg: PPOConfig,
    *,
    seed: int,
    update: int,
    ranks: RankSlice,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> dict[str, float]:
    """GAE on this rank's rollout, flatten, the keyed minibatch schedule, the PPO epochs."""
    advantages, returns = compute_gae(
        buffer.rewards, buffer.values, buffer.dones, last_values, cfg.gamma, cfg.gae_lambda
    )
    batch = RolloutBatch(
        prompts=buffer.flat_prompts(),
        actions=buffer.actions.reshape(-1),
        logprobs=buffer.logprobs.reshape(-1),
        values=buffer.values.reshape(-1),
        advantages=advantages.reshape(-1),
        returns=returns.reshape(-1),
    )
    schedule = minibatch_schedule(
        cfg.steps_per_env,
        ranks.num_envs_global,
        ranks.env_offset,
        ranks.num_envs_local,
        cfg.minibatch_size,
        cfg.epochs,
        seed,
        update,
    )
    stats = ppo_update(
        policy,
        params,
        optimizer,
        batch,
        schedule,
        cfg,
        world_size=ranks.world_size,
        all_reduce_sum=all_reduce_sum,
    )
    stats["value_mean"] = float(buffer.values.mean())
    stats["advantage_mean"] = float(advantages.mean())
    stats["return_target_mean"] = float(returns.mean())
    return stats


def _check_finite(
    loss: float,
    grad_norm: float,
    where: str,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """Raise NonFiniteError on every rank when the loss or gradient norm of any rank is NaN/inf.

    The gradient norm is already global (DDP/FSDP reduce the gradients), but a rank's loss is
    local: the flags are summed so that every rank decides the same, and none is left behind in
    the next collective.
    """
    flags = torch.tensor(
        [float(not math.isfinite(loss)), float(not math.isfinite(grad_norm))], dtype=torch.float64
    )
    bad_loss, bad_norm = (int(v) for v in all_reduce_sum(flags).tolist())
    if bad_loss or bad_norm:
        what = " and ".join(
            w for w, bad in (("loss", bad_loss), ("gradient norm", bad_norm)) if bad
        )
        raise NonFiniteError(
            f"non-finite {what} in the PPO update ({where}; loss {loss:.4g}, gradient norm "
            f"{grad_norm:.4g} on this rank); the optimizer step was not applied"
        )


def _normalize_global(
    adv: torch.Tensor, weight: float, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Normalise with the minibatch's statistics over ALL ranks (not just the local slice)."""
    stats = torch.stack([adv.sum(), (adv**2).sum(), torch.tensor(float(len(adv)))]).double()
    stats = all_reduce_sum(stats * weight)
    n = max(float(stats[2]), 1.0)
    mean = stats[0] / n
    var = (stats[1] / n - mean**2).clamp_min(0.0)
    return ((adv - mean.to(adv.dtype)) / (var.sqrt().to(adv.dtype) + 1e-8)).to(adv.dtype)
