"""The one action sampler: inverse-CDF sampling of candidate actions from given uniforms.

Training, evaluation and `GlamPolicy.act` all pick actions here; they differ only in where the
uniforms come from. Training keys them by (seed, update, step, global env index) so that resume
is bitwise exact and N ranks reproduce one rank; evaluation draws them from one generator per
env stream so that an episode's actions do not depend on how streams are split over ranks.
Pure functions on numpy/torch arrays; no model, no environment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Mixed into the training key so these uniforms never coincide with another keyed stream.
_TRAIN_SALT = 0x5EED


def keyed_uniforms(seed: int, update: int, step: int, num_envs_global: int) -> np.ndarray:
    """Uniforms in [0, 1) for every global env at (update, step): the same on every rank."""
    return np.random.default_rng([seed, update, step, _TRAIN_SALT]).random(num_envs_global)


def stream_uniforms(rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """One uniform from each env stream's generator (evaluation)."""
    return np.array([rng.random() for rng in rngs], dtype=np.float64)


def sample_from_uniforms(
    logprobs: torch.Tensor, uniforms: np.ndarray | torch.Tensor
) -> torch.Tensor:
    """Index k of the first candidate whose cumulative probability exceeds u, per row.

    ``logprobs`` [B, K] normalised log-probs (any float dtype), ``uniforms`` [B]. Computed in
    float64 on CPU so the choice does not depend on the device or dtype the model ran in.
    Returns long [B] on CPU.
    """
    # Candidate log-probs are normalised (<= 0), so exp cannot overflow; the division only
    # absorbs rounding in the sum.
    cdf = logprobs.detach().cpu().double().exp().cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    u = torch.as_tensor(uniforms, dtype=torch.float64).cpu()
    # right=True: the first k with cdf_k > u, so a zero-probability candidate (an empty
    # interval) is never picked, not even by u == 0.
    idx = torch.searchsorted(cdf, u[:, None], right=True).squeeze(1)
    return idx.clamp_max(logprobs.shape[1] - 1)


def greedy(logprobs: torch.Tensor) -> torch.Tensor:
    """The most likely candidate per row (long [B] on CPU)."""
    return logprobs.detach().argmax(-1).cpu()


def sample_training_actions(
    logprobs: torch.Tensor,
    seed: int,
    update: int,
    step: int,
    env_offset: int,
    num_envs_global: int,
) -> torch.Tensor:
    """Actions of this rank's envs [env_offset, env_offset + B) at (update, step)."""
    uniforms = keyed_uniforms(seed, update, step, num_envs_global)
    return sample_from_uniforms(logprobs, uniforms[env_offset : env_offset + logprobs.shape[0]])
