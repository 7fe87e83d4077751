"""How the policy is parallelised, from outside the model (torchtitan style): DDP replicas or
FSDP2 shards (one unit per T5 block + the root), activation checkpointing."""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from glamhpc.config import DistConfig
from glamhpc.distributed.context import DistContext


def _t5_blocks(module: nn.Module) -> list[nn.Module]:
    from transformers.models.t5.modeling_t5 import T5Block

    return [m for m in module.modules() if isinstance(m, T5Block)]


def wrap_policy(policy: nn.Module, ctx: DistContext, cfg: DistConfig) -> nn.Module:
    """DDP replica or FSDP2 shards (one unit per T5 block + the root), plus the memory options."""
    if cfg.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            apply_activation_checkpointing,
        )

        blocks = set(_t5_blocks(policy))
        apply_activation_checkpointing(policy, check_fn=lambda m: m in blocks)
    if cfg.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if not ctx.distributed:
            return policy
        mp = None
        if cfg.mixed_precision == "bf16":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        kwargs: dict[str, Any] = {"mp_policy": mp} if mp is not None else {}
        for block in _t5_blocks(policy):
            fully_shard(block, **kwargs)
        fully_shard(policy, **kwargs)
        return policy
    if not ctx.distributed:
        return policy
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    ddp = DistributedDataParallel(policy, device_ids=device_ids, broadcast_buffers=False)
    if ctx.device.type == "cpu":
        # On CPU (gloo) there is little compute to overlap with, so a synchronous, timed
        # all-reduce costs nothing and lets the metrics split update time from communication.
        ddp.register_comm_hook(ctx, _timed_allreduce_hook)
    return ddp


def _timed_allreduce_hook(ctx, bucket):  # type: ignore[no-untyped-def]
    # No annotations on purpose: with postponed evaluation they are strings, and DDP's
    # register_comm_hook rejects a `bucket` annotation that is not dist.GradBucket itself.
    import time

    start = time.perf_counter()
    tensor = bucket.buffer()
    dist.all_reduce(tensor)
    tensor.div_(ctx.world_size)
    ctx.comm_seconds += time.perf_counter() - start
    future: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    future.set_result(tensor)
    return future


def unwrap(module: nn.Module) -> nn.Module:
    return cast(nn.Module, module.module) if hasattr(module, "module") else module
