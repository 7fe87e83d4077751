"""The process group: joining it from torchrun's environment, the device, and every collective.

A single process without torchrun gets a ``DistContext`` of world size 1 whose collectives are
identities, so the same trainer code runs on a laptop and on many nodes.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from glamhpc.config import ConfigError, DistConfig, env_split_problem

T = TypeVar("T")


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    comm_seconds: float = 0.0  # time spent in explicit collectives (benchmarks read it)

    in_group: bool = False
    """A process group exists even for a world of one (`init_distributed(group_of_one=True)`):
    the parallel wrappers then apply, as on many ranks (single-GPU FSDP2 benchmarks)."""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.in_group

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
    """This rank's device: the GPU of its LOCAL_RANK. (policy.models.resolve_device knows no ranks;
    the trainer passes the result to it as an explicit device, so the choice is made once.)"""
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if preference == "cuda":
        raise ConfigError("model.device=cuda but no CUDA GPU is visible; use model.device=auto")
    return torch.device("cpu")


def init_distributed(
    cfg: DistConfig, device_preference: str = "auto", *, group_of_one: bool = False
) -> DistContext:
    """Join the torchrun process group when launched by torchrun; otherwise a world of one
    (with a real one-rank process group on 127.0.0.1 when ``group_of_one``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    alone = group_of_one and world_size == 1
    if (world_size > 1 or alone) and not dist.is_initialized():
        backend = cfg.backend
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://127.0.0.1:{_free_port()}" if alone else None,
            rank=0 if alone else -1,
            world_size=1 if alone else -1,
            timeout=datetime.timedelta(seconds=cfg.timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    return DistContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=device, in_group=alone
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
