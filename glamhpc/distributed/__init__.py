"""All parallelism lives here (torchtitan style): process group, device, DDP/FSDP2, sharded state.

The model, scoring, PPO and evaluation code never import torch.distributed: collectives go through
`DistContext`, wrapping through `wrap_policy`, checkpoint state through `save_model_state` /
`load_model_state`. An import-contract test keeps it that way.
"""

from glamhpc.distributed.context import DistContext, init_distributed, pick_device, shutdown
from glamhpc.distributed.memory import HeldMemory, held_memory
from glamhpc.distributed.parallel import unwrap, wrap_policy
from glamhpc.distributed.state import (
    full_state_dict,
    is_sharded,
    load_model_state,
    read_checkpoint_tensors,
    save_model_state,
    tied_groups,
)

__all__ = [
    "DistContext",
    "HeldMemory",
    "full_state_dict",
    "held_memory",
    "init_distributed",
    "is_sharded",
    "load_model_state",
    "pick_device",
    "read_checkpoint_tensors",
    "save_model_state",
    "shutdown",
    "tied_groups",
    "unwrap",
    "wrap_policy",
]
