"""Recurrent PPO (BabyAI's): GAE on the rollout, then epochs of minibatches of 20-step chunks,
each replayed through the LSTM from its stored start memory (backpropagation through time).

A chunk is ``recurrence`` consecutive steps of one env: it starts from the memory the rollout
stored for its first step and carries the network's own memory from step to step, cut by the
mask where an episode ended inside the chunk. The loss of a minibatch is the mean of GLAM's
per-sample PPO terms (`glamhpc.rl.ppo.ppo_losses`: clipped surrogate, clipped value error
weighted by ``value_coef``, entropy bonus) over all its steps, which is BabyAI's loss (the
per-step batch means summed and divided by the recurrence). Chunks are dealt to minibatches by
GLAM's keyed schedule (`minibatch_schedule`, a function of seed, update and epoch), so a resumed
run draws the same minibatches.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from glamhpc.agents.symbolic.model import SymbolicACModel
from glamhpc.agents.symbolic.rollout import RecurrentRollout
from glamhpc.config import PPOConfig
from glamhpc.rl.buffer import compute_gae
from glamhpc.rl.ppo import NonFiniteError, minibatch_schedule, ppo_losses

_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")


def chunk_problem(steps_per_env: int, minibatch_size: int, recurrence: int) -> str | None:
    """Why the rollout cannot be cut into whole chunks and minibatches of whole chunks."""
    if steps_per_env % recurrence:
        return (
            f"ppo.steps_per_env={steps_per_env} is not a multiple of symbolic.recurrence="
            f"{recurrence}; use a multiple (BabyAI: 40 steps, recurrence 20)"
        )
    if minibatch_size % recurrence:
        return (
            f"ppo.minibatch_size={minibatch_size} is not a multiple of symbolic.recurrence="
            f"{recurrence}; use a multiple (BabyAI: 1280 frames, recurrence 20)"
        )
    return None


def replay_chunks(
    net: SymbolicACModel,
    rollout: RecurrentRollout,
    chunks: np.ndarray,
    recurrence: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Re-run the chunks (indices ``c * N + env``) with gradients: the view and instruction
    features of all their steps in one pass, the LSTM, actor and critic step by step.

    Returns (log-probs [R * B, A], values [R * B], (t, env) of each row): rows are step-major.
    """
    n = rollout.actions.shape[1]
    chunk, env = np.divmod(chunks, n)
    env_t = torch.as_tensor(env, dtype=torch.long)
    start = torch.as_tensor(chunk * recurrence, dtype=torch.long)
    # Rows step-major: row i * B + b is step start[b] + i of chunk b.
    times = (start[None, :] + torch.arange(recurrence)[:, None]).reshape(-1)
    envs = env_t.repeat(recurrence)
    # The view and the instruction do not depend on the memory: one batched pass for all steps
    # (batch norm then normalises over the whole minibatch, not step by step: docs/BASELINES.md).
    instr = net.encode_instr(
        rollout.tokens[times, envs].to(device), rollout.lengths[times, envs].to(device)
    )
    features = net.features(rollout.images[times, envs].to(device), instr)
    features = features.view(recurrence, len(chunks), -1)
    memory = rollout.memories[start, env_t].to(device)
    logprobs, values = [], []
    for i in range(recurrence):
        if i:
            memory = memory * rollout.masks[start + i, env_t].to(device)[:, None]
        step_logprobs, step_values, memory = net.recur(features[i], memory)
        logprobs.append(step_logprobs)
        values.append(step_values)
    return torch.cat(logprobs), torch.cat(values), (times, envs)


def recurrent_update(
    net: SymbolicACModel,
    optimizer: torch.optim.Optimizer,
    rollout: RecurrentRollout,
    cfg: PPOConfig,
    recurrence: int,
    *,
    seed: int,
    update: int,
) -> dict[str, float]:
    """GAE, then ``cfg.epochs`` passes of clipped-PPO steps over minibatches of chunks."""
    advantages, returns = compute_gae(
        rollout.rewards, rollout.values, rollout.dones, rollout.last_values, cfg.gamma,
        cfg.gae_lambda,
    )  # fmt: skip
    steps, n = rollout.actions.shape
    device = next(net.parameters()).device
    schedule = minibatch_schedule(
        steps // recurrence, n, 0, n, cfg.minibatch_size // recurrence, cfg.epochs, seed, update
    )
    params = [p for p in net.parameters() if p.requires_grad]
    sums = torch.zeros(len(_KEYS), dtype=torch.float64)
    count, grad_norms = 0, []
    for epoch, epoch_batches in enumerate(schedule):
        for number, mb in enumerate(epoch_batches):
            all_logprobs, values, (t, env) = replay_chunks(
                net, rollout, mb.local_indices, recurrence, device
            )
            adv = advantages[t, env].to(device)
            if cfg.normalize_advantages:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            actions = rollout.actions[t, env].to(device)
            terms = ppo_losses(
                all_logprobs.gather(1, actions[:, None]).squeeze(1),
                all_logprobs,
                values,
                rollout.logprobs[t, env].to(device),
                rollout.values[t, env].to(device),
                adv,
                returns[t, env].to(device),
                cfg,
            )
            loss = terms["loss"].mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            value = float(loss.detach())
            if not (math.isfinite(value) and math.isfinite(norm)):
                raise NonFiniteError(
                    f"non-finite loss or gradient norm in the Symbolic-PPO update (epoch "
                    f"{epoch + 1}, minibatch {number + 1}; loss {value:.4g}, gradient norm "
                    f"{norm:.4g}); the optimizer step was not applied"
                )
            optimizer.step()
            grad_norms.append(norm)
            with torch.no_grad():
                sums += torch.tensor([float(terms[k].sum()) for k in _KEYS], dtype=torch.float64)
            count += len(t)
        if cfg.target_kl is not None and float(sums[3]) / max(count, 1) > cfg.target_kl:
            break
    stats = {k: float(sums[i]) / max(count, 1) for i, k in enumerate(_KEYS)}
    stats.update(
        grad_norm=float(np.mean(grad_norms)) if grad_norms else 0.0,
        gradient_steps=float(len(grad_norms)),
        value_mean=float(rollout.values.mean()),
        advantage_mean=float(advantages.mean()),
        return_target_mean=float(returns.mean()),
    )
    return stats
