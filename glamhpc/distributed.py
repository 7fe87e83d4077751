"""All parallelism lives here (torchtitan style): process group, device, DDP/FSDP2, sharded state.

The model, scoring and PPO code never import torch.distributed. A single process without torchrun
gets a ``DistContext`` of world size 1 whose collectives are identities, so the same trainer code
runs on a laptop and on many nodes.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from glamhpc.config import ConfigError, DistConfig, env_split_problem

T = TypeVar("T")


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    comm_seconds: float = 0.0  # time spent in explicit collectives (benchmarks read it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.distributed:
            return tensor
        import time

        start = time.perf_counter()
        work = tensor.to(self.device) if self.device.type == "cuda" else tensor
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        self.comm_seconds += time.perf_counter() - start
        return work.to(tensor.device)

    def any_flag(self, flag: bool) -> bool:
        """True on every rank if it is True on any rank (agree on signals and errors)."""
        if not self.distributed:
            return flag
        return bool(self.all_reduce_sum(torch.tensor([1.0 if flag else 0.0]))[0] > 0)

    def all_gather_objects(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def gather_objects_to_main(self, obj: T) -> list[T] | None:
        """Every rank's ``obj`` in rank order on rank 0 (None elsewhere), then a barrier: rank 0
        reaches it only once it holds everything, so no rank tears its connections down while
        rank 0 is still receiving."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, gathered, dst=0)
        dist.barrier()
        return gathered

    def env_slice(self, num_envs_global: int) -> tuple[int, int]:
        """(first global env index, num_envs_local) of this rank: envs split evenly."""
        problem = env_split_problem(num_envs_global, self.world_size)
        if problem:
            raise ConfigError(problem)
        num_envs_local = num_envs_global // self.world_size
        return self.rank * num_envs_local, num_envs_local

    def broadcast_object(self, obj: Any) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """This rank's device: the GPU of its LOCAL_RANK. (policy.models.pick_device knows no ranks;
    the trainer passes the result to it as an explicit device, so the choice is made once.)"""
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if preference == "cuda":
        raise ConfigError("model.device=cuda but no CUDA GPU is visible; use model.device=auto")
    return torch.device("cpu")


def init_distributed(cfg: DistConfig, device_preference: str = "auto") -> DistContext:
    """Join the torchrun process group when launched by torchrun; otherwise a world of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = cfg.backend
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=cfg.timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


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
    return module.module if hasattr(module, "module") else module


# ---------------------------------------------------------------------- model + optimizer state


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def save_model_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> tuple[Callable[[Path], None], Callable[[Path], None] | None]:
    """Writers for Checkpointer.save: (rank-0 shared writer, per-rank writer or None).

    Replicated models write model.safetensors + optimizer.pt from rank 0. Sharded (FSDP2) models
    write a torch.distributed.checkpoint folder collectively (DCP reloads it on any world size).
    """
    model = unwrap(module)
    if is_sharded(model):
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        def write_sharded(folder: Path) -> None:
            msd, osd = get_state_dict(model, optimizer)
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder / "dcp"))

        return (lambda folder: None), write_sharded

    def write_full(folder: Path) -> None:
        from safetensors.torch import save_model

        save_model(model, str(folder / "model.safetensors"))
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")

    return write_full, None


def load_model_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, ctx: DistContext
) -> None:
    """Load either format into either layout (resharding when the world size changed)."""
    model = unwrap(module)
    sharded = is_sharded(model)
    if (folder / "dcp").is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=str(folder / "dcp"))
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        return
    from safetensors.torch import load_file

    full = load_file(str(folder / "model.safetensors"))
    optim_state = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        # Tied weights are stored once by safetensors' save_model; restore the aliases' names.
        full = _complete_tied(model, full)
        opts = StateDictOptions(full_state_dict=True)
        set_state_dict(
            model, optimizer, model_state_dict=full, optim_state_dict=optim_state, options=opts
        )
        return
    from safetensors.torch import load_model

    load_model(model, str(folder / "model.safetensors"), device=str(ctx.device))
    optimizer.load_state_dict(optim_state)


def _complete_tied(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = dict(model.state_dict(keep_vars=True))
    by_id: dict[int, list[str]] = {}
    for name, tensor in names.items():
        by_id.setdefault(id(tensor), []).append(name)
    out = dict(state)
    for aliases in by_id.values():
        present = [a for a in aliases if a in out]
        if present:
            for alias in aliases:
                out.setdefault(alias, out[present[0]])
    return out


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state on CPU. Collective under FSDP2: every rank must call it; only
    rank 0 receives the tensors (others get an empty dict)."""
    model = unwrap(module)
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=opts)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
