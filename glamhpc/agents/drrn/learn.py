"""DRRN's acting and its Q-learning step, as upstream's ``DRRNAgent.act`` / ``update``.

Acting samples from softmax(Q) over the candidates (upstream's exploration: no epsilon, no
temperature) with the shared keyed sampler, so resume and reruns pick the same actions. The
update is one-step Q-learning without a target network: target r + gamma * max_a' Q(s', a')
(zero after a done; time-limit ends count as done, as upstream), Huber loss on Q(s, a), Adam,
gradient-norm clip (upstream: 5).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from glamhpc.agents.drrn.network import DRRN, Seqs
from glamhpc.agents.drrn.replay import Transition
from glamhpc.policy.sampling import sample_training_actions

#: Mixed into the replay-sampling key: never the same stream as the action sampler's.
_REPLAY_SALT = 0xD22


def action_logprobs(net: DRRN, states: Seqs, actions: Seqs) -> torch.Tensor:
    """log softmax(Q) over the candidates, [B, K] on CPU in fp32 (no gradients)."""
    with torch.no_grad():
        return torch.log_softmax(net(states, actions).float(), dim=-1).cpu()


def act(
    net: DRRN, states: Seqs, actions: Seqs, seed: int, update: int, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sampled candidate index per state, log-probs [B, K]) at (update, step) of the run."""
    logp = action_logprobs(net, states, actions)
    return sample_training_actions(logp, seed, update, step, 0, logp.shape[0]), logp


def replay_rng(seed: int, update: int, grad_step: int) -> np.random.Generator:
    """The generator of one replay batch: a function of (seed, update, gradient step) only."""
    return np.random.default_rng([seed, update, grad_step, _REPLAY_SALT])


def td_step(
    net: DRRN,
    optimizer: torch.optim.Optimizer,
    batch: Sequence[Transition],
    actions: Seqs,
    gamma: float,
    clip: float,
) -> dict[str, float]:
    """One gradient step on a replay batch; returns its loss, Q and gradient statistics."""
    device = net.device
    taken = torch.tensor([t.action for t in batch], dtype=torch.long, device=device)
    rewards = torch.tensor([t.reward for t in batch], dtype=torch.float32, device=device)
    dones = torch.tensor([t.done for t in batch], dtype=torch.float32, device=device)
    with torch.no_grad():
        next_q = net([t.next_state for t in batch], actions).max(dim=1).values
    targets = rewards + gamma * next_q * (1.0 - dones)
    q = net([t.state for t in batch], actions).gather(1, taken[:, None]).squeeze(1)
    loss = F.smooth_l1_loss(q, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    optimizer.step()
    return {
        "td_loss": float(loss.detach()),
        "q_mean": float(q.detach().mean()),
        "target_mean": float(targets.mean()),
        "grad_norm": float(grad_norm),
    }
