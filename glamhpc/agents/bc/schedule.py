"""Which pairs each step trains on, and at what learning rate: pure functions of the step.

Nothing here holds state, so resuming at step s (from the step counter alone) continues exactly
where the uninterrupted run would be, mid-epoch included:

- epoch ``e`` visits the pairs in the order of a permutation keyed by (seed, e);
- step ``s`` of a run is batch ``s % B`` of epoch ``s // B`` (B batches per epoch, the last one
  shorter when the batch size does not divide the dataset: no pair is dropped);
- a step's global batch is split over the ranks by position (rank r takes every world-th
  pair from r), so N ranks together see exactly the pairs of one rank;
- the learning rate is linear warm-up then cosine decay to 0 at the last step (the schedule
  of Hugging Face's ``get_cosine_schedule_with_warmup``, which upstream's AdamW used).
"""

from __future__ import annotations

import math

import numpy as np

#: Salt of the epoch permutations, so they never coincide with another generator keyed by seed.
_SALT = 0xB0C1


def batches_per_epoch(pairs: int, batch_size: int) -> int:
    if pairs < 1 or batch_size < 1:
        raise ValueError(f"need pairs >= 1 and batch_size >= 1, got {pairs}, {batch_size}")
    return math.ceil(pairs / batch_size)


def total_steps(pairs: int, batch_size: int, epochs: int, max_steps: int | None = None) -> int:
    """Steps of the run: ``epochs`` passes, or fewer when ``max_steps`` stops it earlier."""
    steps = epochs * batches_per_epoch(pairs, batch_size)
    return min(steps, max_steps) if max_steps else steps


def epoch_order(seed: int, epoch: int, pairs: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the ``pairs`` pairs."""
    return np.random.default_rng([seed, epoch, _SALT]).permutation(pairs)


def step_batch(seed: int, step: int, pairs: int, batch_size: int) -> np.ndarray:
    """Indices of the pairs of step ``step`` (0-based), over all ranks."""
    per_epoch = batches_per_epoch(pairs, batch_size)
    epoch, number = divmod(step, per_epoch)
    order = epoch_order(seed, epoch, pairs)
    return order[number * batch_size : (number + 1) * batch_size]


def rank_share(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s part of a global batch (may be empty when the batch is shorter)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return batch[rank::world_size]


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Learning rate of step ``step`` (0-based) of ``total``: warm-up, then cosine to 0."""
    if step < warmup:
        return peak * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return peak * max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
