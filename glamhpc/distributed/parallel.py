"""How the policy is parallelised, from outside the model (torchtitan style): DDP replicas or
FSDP2 shards (one unit per T5 block + the root), activation checkpointing."""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from torch import nn

from glamhpc.config import DistConfig
from glamhpc.distributed.context import DistContext


def _t5_blocks(module: nn.Module) -> list[nn.Module]:
    from transformers.models.t5.modeling_t5 import T5Block

    return [m for m in module.modules() if isinstance(m, T5Block)]


def wrap_policy(
    policy: nn.Module,
    ctx: DistContext,
    cfg: DistConfig,
    precision: Literal["fp32", "bf16-mixed"] = "fp32",
) -> nn.Module:
    """DDP replica or FSDP2 shards (one unit per T5 block + the root), plus the memory options.

    ``precision`` is `model.precision`. Parameters (what the optimizer updates and checkpoints
    hold) stay fp32 in every case. bf16-mixed under DDP: nothing to do here, the policy's autocast
    computes in bf16. Under FSDP2: the T5 blocks and the root are gathered in bf16 (half the
    all-gather traffic) with fp32 gradient reductions, while the value head is a unit of its own
    gathered in fp32, so the policy's fp32 value head input meets fp32 weights.
    """
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
        if precision == "bf16-mixed":
            bf16 = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            for block in _t5_blocks(policy):
                fully_shard(block, mp_policy=bf16)
            for name in ("value_head", "action_head"):  # fp32 heads (action: policy.head)
                head = getattr(policy, name, None)
                if isinstance(head, nn.Module):
                    # Its own unit before the root: the root's bf16 policy would gather it.
                    fp32 = MixedPrecisionPolicy(
                        param_dtype=torch.float32, reduce_dtype=torch.float32
                    )
                    fully_shard(head, mp_policy=fp32)
            fully_shard(policy, mp_policy=bf16)
            return policy
        for block in _t5_blocks(policy):
            fully_shard(block)
        fully_shard(policy)
        return policy
    if not ctx.distributed:
        return policy
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    ddp = DistributedDataParallel(policy, device_ids=device_ids, **_no_forward_buffer_sync())
    if ctx.device.type == "cpu":
        # On CPU (gloo) there is little compute to overlap with, so a synchronous, timed
        # all-reduce costs nothing and lets the metrics split update time from communication.
        ddp.register_comm_hook(ctx, _timed_allreduce_hook)
    return ddp


def _no_forward_buffer_sync() -> dict[str, Any]:
    """No buffer broadcast before each forward: ranks call the policy different numbers of
    times while acting, and its only buffers (the candidate action ids) are the same on every
    rank. torch >= 2.13 names this ``forward_sync_buffers`` and warns (FutureWarning, on every
    rank) about the old ``broadcast_buffers``; older torch only knows the old name. The new one
    still syncs buffers once at construction, harmless for identical buffers."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


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
