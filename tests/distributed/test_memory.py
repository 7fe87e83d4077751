"""held_memory: the bytes one rank holds after an update, each storage once (exact numbers)."""

from __future__ import annotations

import torch
from torch import nn

from glamhpc.distributed import held_memory
from glamhpc.rl.health import UpdateHealth

F32 = 4


class Toy(nn.Module):
    """A linear layer and a head tied to an embedding: 16 + 20 parameters, 3 tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)  # 12 + 4
        self.embed = nn.Embedding(5, 4)  # 20
        self.head = nn.Linear(4, 5, bias=False)
        self.head.weight = self.embed.weight  # tied: one storage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.linear(x)) + self.embed.weight.sum()


def _updated() -> tuple[Toy, torch.optim.Optimizer, UpdateHealth]:
    torch.manual_seed(0)
    model = Toy()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    health = UpdateHealth(model.named_parameters())
    health.snapshot()
    optimizer.zero_grad(set_to_none=True)
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    return model, optimizer, health


def test_counts_weights_grads_adam_and_snapshot_once_each() -> None:
    model, optimizer, health = _updated()
    held = held_memory(model, optimizer, health.copies)
    assert held.weights == 36 * F32  # the tied weight once
    assert held.grads == 36 * F32
    # exp_avg + exp_avg_sq per element, plus Adam's fp32 scalar `step` per parameter tensor.
    assert held.optimizer == 2 * 36 * F32 + 3 * F32
    assert held.health == 36 * F32
    assert held.static == 36 * F32 * 5 + 3 * F32
    assert held.cuda_peak is None
    metrics = held.metrics()
    assert metrics["memory/weights_gb"] == 36 * F32 / 1e9
    assert set(metrics) == {
        "memory/weights_gb",
        "memory/grads_gb",
        "memory/optimizer_gb",
        "memory/health_gb",
    }


def test_grads_set_to_none_hold_nothing_and_aliases_are_not_counted_again() -> None:
    model, optimizer, _ = _updated()
    optimizer.zero_grad(set_to_none=True)
    # A view of a weight is the weight's storage: counted with the weights, not again.
    held = held_memory(model, optimizer, [model.linear.weight.detach()[0]])
    assert held.grads == 0
    assert held.health == 0
    assert held.weights == 36 * F32


def test_a_view_counts_its_whole_storage() -> None:
    """What is held is the storage: a slice keeps all of it alive."""
    model, optimizer, _ = _updated()
    big = torch.zeros(100)
    held = held_memory(model, optimizer, [big[:10]])
    assert held.health == 100 * F32
