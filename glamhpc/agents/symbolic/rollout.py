"""Symbolic-PPO's rollout: every env acts ``steps`` times on its symbolic view and mission,
carrying the LSTM memory of its episode across steps and updates.

What the recurrent update needs besides GLAM's rollout: the observations themselves (view and
mission tokens, the network re-reads them), the memory each step started from, and the mask
that cuts the memory where an episode ended. The memory of each env lives in `Learner.memory`
(a buffer), so it is saved with the weights and a resumed run continues mid-episode exactly.
Actions come from GLAM's keyed sampler: uniforms keyed by (seed, update, step, env).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from glamhpc.agents.symbolic.model import SymbolicACModel
from glamhpc.agents.symbolic.vocab import encode
from glamhpc.policy.sampling import sample_training_actions
from glamhpc.rl.rollout import EpisodeStats

if TYPE_CHECKING:
    from glamhpc.envs.batch import EnvBatch


class Learner(nn.Module):
    """The network and the memory of each training env (saved together in a checkpoint)."""

    memory: torch.Tensor

    def __init__(self, net: SymbolicACModel, num_envs: int) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("memory", torch.zeros(num_envs, net.memory_size))


@dataclass
class Observations:
    """A batch of symbolic observations as tensors on the network's device."""

    images: torch.Tensor  # uint8 [B, 7, 7, 3]
    tokens: torch.Tensor  # long [B, L], padded
    lengths: torch.Tensor  # long [B]

    @staticmethod
    def read(envs: EnvBatch, vocab: list[str], device: torch.device) -> Observations:
        tokens, lengths = encode(envs.missions(), vocab)
        return Observations(
            torch.as_tensor(envs.images(), device=device),
            torch.tensor(tokens, dtype=torch.long, device=device),
            torch.tensor(lengths, dtype=torch.long, device=device),
        )


def act(
    net: SymbolicACModel, obs: Observations, memory: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-probs [B, A], values [B], next memory) of one step."""
    return net(obs.images, net.encode_instr(obs.tokens, obs.lengths), memory)


@dataclass
class RecurrentRollout:
    """T steps x N envs; ``memories[t]`` is the memory step t started from (already cut at an
    episode start), ``masks[t]`` is 0 where step t starts a new episode (t > 0)."""

    images: torch.Tensor  # uint8 [T, N, 7, 7, 3]
    tokens: torch.Tensor  # long [T, N, L]
    lengths: torch.Tensor  # long [T, N]
    memories: torch.Tensor  # [T, N, 2 * memory_dim]
    masks: torch.Tensor  # [T, N]
    actions: torch.Tensor  # long [T, N]
    logprobs: torch.Tensor  # [T, N]
    values: torch.Tensor  # [T, N]
    rewards: torch.Tensor  # [T, N]
    dones: torch.Tensor  # bool [T, N]
    last_values: torch.Tensor  # [N]
    episodes: EpisodeStats


def _pad_stack(rows: list[torch.Tensor]) -> torch.Tensor:
    """[N, L_t] token tensors of different widths -> [T, N, max L] (0 = PAD)."""
    width = max(r.shape[1] for r in rows)
    return torch.stack([nn.functional.pad(r, (0, width - r.shape[1])) for r in rows])


def collect(
    learner: Learner,
    envs: EnvBatch,
    vocab: list[str],
    steps: int,
    seed: int,
    update: int,
) -> RecurrentRollout:
    """One rollout on CPU tensors (the model runs on its own device)."""
    net, device = learner.net, learner.memory.device
    n = envs.num_envs
    images, tokens, lengths, memories, masks = [], [], [], [], []
    actions = torch.zeros(steps, n, dtype=torch.long)
    logprobs, values, rewards = torch.zeros(steps, n), torch.zeros(steps, n), torch.zeros(steps, n)
    dones = torch.zeros(steps, n, dtype=torch.bool)
    stats = EpisodeStats()
    mask = torch.ones(n)
    with torch.no_grad():
        for t in range(steps):
            obs = Observations.read(envs, vocab, device)
            memory = learner.memory.clone()
            all_logprobs, value, next_memory = act(net, obs, memory)
            chosen = sample_training_actions(all_logprobs, seed, update, t, 0, n)
            result = envs.step(chosen.tolist())
            for info in result.episodes:
                stats.add(info)
            done = torch.as_tensor(result.dones)
            # The memory of a finished episode is not carried into the next one.
            keep = (~done).to(next_memory.dtype).to(device)[:, None]
            learner.memory.copy_(next_memory * keep)
            images.append(obs.images.cpu())
            tokens.append(obs.tokens.cpu())
            lengths.append(obs.lengths.cpu())
            memories.append(memory.cpu())
            masks.append(mask)
            mask = (~done).float()
            actions[t] = chosen
            logprobs[t] = all_logprobs.cpu().gather(1, chosen[:, None]).squeeze(1)
            values[t] = value.cpu()
            rewards[t] = torch.as_tensor(result.rewards)
            dones[t] = done
        _, last_values, _ = act(net, Observations.read(envs, vocab, device), learner.memory)
    return RecurrentRollout(
        images=torch.stack(images),
        tokens=_pad_stack(tokens),
        lengths=torch.stack(lengths),
        memories=torch.stack(memories),
        masks=torch.stack(masks),
        actions=actions,
        logprobs=logprobs,
        values=values,
        rewards=rewards,
        dones=dones,
        last_values=last_values.cpu(),
        episodes=stats,
    )
