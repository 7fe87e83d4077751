"""Update health: how much each part of the policy moved in one PPO update.

Healthy-looking losses do not prove that the LLM learns: with bf16 weights and a small lr every
Adam step rounds away and the LLM stays frozen while the value head trains. So after every update
the trainer measures, per parameter group, the relative update size |Δθ|/|θ| (L2 norms over the
group, θ before the update) and the fraction of elements whose value changed at all, and warns
when the LLM did not move although it should have.

Cost: one copy of the rank's trainable parameters taken before the update (on their device, so
no host transfer), and a handful of fused norm kernels after it: well under 1% of an update
(`benchmarks/update_health.py`). Memory: one more copy of the trainable parameters, next to
Adam's two moment buffers and the gradients; under FSDP2 only the rank's shard is copied, so it
shrinks with the world size like everything else. With LoRA only the adapters are trainable and
copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from glamhpc.checkpoint import LATEST

GROUPS = ("encoder", "decoder", "embeddings", "lora", "value_head", "other")
"""Parameter groups, in logging order (a group without trainable parameters is not logged)."""
LLM = "llm"
"""The aggregate of every group but the value head: what `stall_warning` watches."""
STALLED_FRACTION = 1e-3
"""Below this fraction of changed LLM elements an update counts as "did not change": bf16
rounding leaves a few tiny weights (whose spacing is below the step) moving, so zero is too
strict, while a working fp32 update changes most elements (measured: > 0.5 on tiny-t5)."""

Sums = tuple[float, float, float, float]
"""Per group: (|Δθ|², |θ|², changed elements, elements)."""


def group_of(name: str) -> str:
    """The group of a parameter from its name in the unwrapped policy (pure).

    Matches name components, so wrappers that insert components (peft's ``base_model.model``,
    activation checkpointing's ``_checkpoint_wrapped_module``) do not change the group.
    """
    parts = name.split(".")
    if any(part.startswith("lora_") for part in parts):
        return "lora"
    if "value_head" in parts:
        return "value_head"
    if any(part in ("shared", "lm_head", "embed_tokens") for part in parts):
        return "embeddings"
    if "encoder" in parts:
        return "encoder"
    if "decoder" in parts:
        return "decoder"
    return "other"


def health_metrics(sums: Mapping[str, Sums]) -> dict[str, float]:
    """``health/<group>/rel_update`` and ``health/<group>/changed_frac`` per group (pure),
    plus the ``llm`` aggregate of every group but the value head."""
    llm = [s for group, s in sums.items() if group != "value_head"]
    totals = dict(sums)
    if llm:
        totals[LLM] = (
            sum(s[0] for s in llm),
            sum(s[1] for s in llm),
            sum(s[2] for s in llm),
            sum(s[3] for s in llm),
        )
    metrics: dict[str, float] = {}
    for group, (delta_sq, param_sq, changed, numel) in totals.items():
        if numel <= 0:
            continue
        metrics[f"health/{group}/rel_update"] = _ratio(math.sqrt(delta_sq), math.sqrt(param_sq))
        metrics[f"health/{group}/changed_frac"] = changed / numel
    return metrics


def _ratio(delta: float, norm: float) -> float:
    if norm > 0:
        return delta / norm
    if delta == 0:
        return 0.0
    return delta if math.isnan(delta) else math.inf  # a zero-initialised group that moved


def nonfinite_groups(metrics: Mapping[str, float]) -> list[str]:
    """Groups whose update is NaN/inf: their weights are no longer finite."""
    return [
        key.split("/")[1]
        for key, value in metrics.items()
        if key.endswith("/rel_update") and not math.isfinite(value)
    ]


def stall_warning(
    metrics: Mapping[str, float], lr: float, grad_norm: float, llm_trainable: bool
) -> str | None:
    """Why the LLM did not learn in this update, or None when it did (or could not: lr 0, or
    no gradient at all)."""
    if not llm_trainable:
        return (
            "the LLM has no trainable parameters (all frozen): only the value head learns; "
            "unfreeze them or enable model.lora"
        )
    changed = metrics.get(f"health/{LLM}/changed_frac")
    if changed is None or lr <= 0 or not grad_norm > 0 or changed >= STALLED_FRACTION:
        return None
    return (
        f"the LLM's weights did not change in this update (health/llm/changed_frac={changed:.1e} "
        f"at lr={lr:g}, grad_norm={grad_norm:.3g}): bf16 weights round every small Adam step "
        "away, so load fp32 weights (model.dtype=fp32) and use model.precision=bf16-mixed "
        "(fp32 master weights) for speed; or all LLM parameters are frozen"
    )


class UpdateHealth:
    """Snapshot the trainable parameters before an update; measure the change after it.

    Args:
        named_parameters: ``named_parameters()`` of the UNWRAPPED policy (names decide groups).
            Under FSDP2 the parameters are DTensors: the local shard is measured and the partial
            sums are added over ranks by the ``all_reduce_sum`` given to :meth:`measure`.
    """

    def __init__(self, named_parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> None:
        named = list(named_parameters)
        trainable = [(n, p) for n, p in named if p.requires_grad]
        self.params = [p for _, p in trainable]
        self.groups = [group_of(n) for n, _ in trainable]
        self.present = [g for g in GROUPS if g in self.groups]
        self.llm_trainable = any(g != "value_head" for g in self.groups)
        # Sharding is the same on every rank, so every rank takes the same collective path.
        self.sharded = any(hasattr(p, "to_local") for p in self.params)
        self._snapshot: list[torch.Tensor] = []

    @property
    def copies(self) -> list[torch.Tensor]:
        """The snapshot's buffers, held between updates (what the memory metrics count)."""
        return list(self._snapshot)

    def _local(self) -> list[torch.Tensor]:
        return [p.to_local() if hasattr(p, "to_local") else p.detach() for p in self.params]

    @torch.no_grad()
    def snapshot(self) -> None:
        """Copy the parameters (buffers allocated once, then reused every update)."""
        local = self._local()
        if len(self._snapshot) != len(local) or any(
            s.shape != t.shape or s.dtype != t.dtype or s.device != t.device
            for s, t in zip(self._snapshot, local, strict=True)
        ):
            self._snapshot = [t.detach().clone() for t in local]
            return
        for s, t in zip(self._snapshot, local, strict=True):
            s.copy_(t)

    @torch.no_grad()
    def measure(
        self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    ) -> dict[str, float]:
        """The health metrics of the update since :meth:`snapshot` (collective when sharded)."""
        if not self.params:
            return {}
        if not self._snapshot:
            raise RuntimeError("UpdateHealth.measure() called without a snapshot()")
        snap, local = self._snapshot, self._local()
        f32 = torch.float32
        # Fused multi-tensor norms; counts per tensor in int64, which stays exact for any size.
        param_norm = torch.stack(torch._foreach_norm(snap, 2, dtype=f32))  # θ before the update
        torch._foreach_sub_(snap, local)  # the snapshot now holds -Δθ (refilled next update)
        delta_norm = torch.stack(torch._foreach_norm(snap, 2, dtype=f32))
        changed = torch.stack([torch.count_nonzero(s) for s in snap])
        numel = torch.tensor([s.numel() for s in snap], device=changed.device)
        columns = torch.stack([delta_norm.double() ** 2, param_norm.double() ** 2])
        per_param = torch.cat([columns, torch.stack([changed, numel]).double()]).T
        index = torch.tensor([self.present.index(g) for g in self.groups], device=per_param.device)
        sums = torch.zeros(len(self.present), 4, dtype=torch.float64, device=per_param.device)
        sums.index_add_(0, index, per_param)
        if self.sharded:
            sums = all_reduce_sum(sums)
        rows = sums.cpu().tolist()  # the one device sync of the measurement
        return health_metrics(
            {g: (r[0], r[1], r[2], r[3]) for g, r in zip(self.present, rows, strict=True)}
        )


def require_finite_weights(health: Mapping[str, float]) -> None:
    """Raise NonFiniteError when an update left some group's weights non-finite (an lr of inf
    with a single minibatch gives finite losses and gradients, then NaN weights)."""
    from glamhpc.rl.ppo import NonFiniteError

    broken = nonfinite_groups(health)
    if broken:
        raise NonFiniteError(
            f"the PPO update made the weights non-finite (groups: {', '.join(broken)}) "
            "although its losses and gradient norms were finite: the learning rate is too "
            "large or not finite"
        )


def stopped_message(exc: Exception, update: int, checkpoints: Path) -> str:
    """What a run stopped by a non-finite update tells the user (and MLflow)."""
    # The pointer, not find_latest(): hashing a large checkpoint only to name it is slow.
    pointer = checkpoints / LATEST
    kept = f"checkpoints/{pointer.read_text().strip()}" if pointer.is_file() else "none"
    return (
        f"update {update} stopped: {exc}. Nothing was saved; the last good checkpoint ({kept}) "
        "stays latest. Lower ppo.lr in a new run (a resume repeats the same updates)"
    )
