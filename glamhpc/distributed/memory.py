"""What one rank really holds after an update: the bytes behind its parameters, gradients,
optimizer state and update-health snapshot.

Lives here because it must know DTensors: under FSDP2 a parameter (and its gradient and Adam
moments) is a DTensor whose rank-local shard is what occupies this rank's memory. The launch
plan's `estimate_memory` is checked against these numbers (`glamhpc train --smoke`).

Bytes are counted per storage, once: tied weights, views and aliases share one storage, and
FSDP2's padded shard storage is counted whole (the padding is held too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

GB = 1e9  # the launch plan's unit, so the two compare without conversion


@dataclass(frozen=True)
class HeldMemory:
    """Bytes held by one rank, by what holds them."""

    weights: int
    grads: int
    optimizer: int
    health: int
    cuda_peak: int | None = None
    """``torch.cuda.max_memory_allocated`` since the process started (None off CUDA)."""

    @property
    def static(self) -> int:
        """What the plan's ``MemoryEstimate.static_gb`` models."""
        return self.weights + self.grads + self.optimizer + self.health

    def metrics(self) -> dict[str, float]:
        """``memory/<part>_gb`` as the trainer logs them (``cuda_peak_gb`` on GPU only)."""
        out = {
            "memory/weights_gb": self.weights / GB,
            "memory/grads_gb": self.grads / GB,
            "memory/optimizer_gb": self.optimizer / GB,
            "memory/health_gb": self.health / GB,
        }
        if self.cuda_peak is not None:
            out["memory/cuda_peak_gb"] = self.cuda_peak / GB
        return out


def _local(tensor: torch.Tensor) -> torch.Tensor:
    # A DTensor's memory on this rank is its local shard; to_local() is a view, no copy.
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def _storage_bytes(tensors: Iterable[torch.Tensor | None], seen: set[tuple[str, int]]) -> int:
    """Bytes of the storages behind ``tensors`` not counted yet (``seen`` is updated)."""
    total = 0
    for tensor in tensors:
        if tensor is None:
            continue
        storage = _local(tensor.detach()).untyped_storage()
        key = (str(storage.device), storage.data_ptr())
        # An empty storage has no address to tell it apart, and holds nothing anyway.
        if storage.nbytes() == 0 or key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [
        value
        for per_param in optimizer.state.values()
        for value in per_param.values()
        if isinstance(value, torch.Tensor)
    ]


def held_memory(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    snapshot: Iterable[torch.Tensor] = (),
    device: torch.device | None = None,
) -> HeldMemory:
    """Bytes this rank holds for ``module``'s parameters, their gradients, ``optimizer``'s state
    and the update-health ``snapshot`` (its copies of the parameters).

    Call it after the update's last optimizer step, before the next ``zero_grad``: gradients are
    set to None between updates (`rl.ppo`), and at that point they are what an update holds. A
    storage shared by two parts is counted once, in the first (weights, grads, optimizer, health).
    Local only, no collective; ``device`` of type cuda adds the CUDA allocator's peak.
    """
    params = list(module.parameters())
    seen: set[tuple[str, int]] = set()
    weights = _storage_bytes(params, seen)
    grads = _storage_bytes((p.grad for p in params), seen)
    optim = _storage_bytes(_optimizer_tensors(optimizer), seen)
    health = _storage_bytes(snapshot, seen)
    peak = None
    if device is not None and device.type == "cuda":
        peak = int(torch.cuda.max_memory_allocated(device))
    return HeldMemory(weights, grads, optim, health, peak)


__all__ = ["HeldMemory", "held_memory"]
