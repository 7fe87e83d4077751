"""Model + optimizer state in either layout: full (safetensors, rank 0) or sharded (DCP)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from glamhpc.distributed.context import DistContext
from glamhpc.distributed.parallel import unwrap

if TYPE_CHECKING:
    from torch.distributed.checkpoint.state_dict import OptimizerStateType, ValueType


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
        # Risk, accepted: torch's DCP format pickles its `dcp/.metadata` and dcp.load unpickles
        # it (tensors themselves load with weights_only). The manifest was verified first, but
        # it sits in the same folder: keep run directories private (docs/CONTRACTS.md, Trust).
        dcp.load(state, checkpoint_id=str(folder / "dcp"))
        set_state_dict(
            model,
            optimizer,
            model_state_dict=cast("dict[str, ValueType]", state["model"]),
            optim_state_dict=cast("OptimizerStateType", state["optim"]),
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
            model,
            optimizer,
            model_state_dict=cast("dict[str, ValueType]", full),
            optim_state_dict=optim_state,
            options=opts,
        )
        return
    from safetensors.torch import load_model

    load_model(model, str(folder / "model.safetensors"), device=str(ctx.device))
    optimizer.load_state_dict(optim_state)


def tied_groups(model: nn.Module) -> list[list[str]]:
    """Names that share one tensor (tied weights), each group of two or more in state order."""
    by_id: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        by_id.setdefault(id(tensor), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def complete_tied(
    state: dict[str, torch.Tensor], groups: list[list[str]]
) -> dict[str, torch.Tensor]:
    """Give every alias of a tied tensor its entry (safetensors' save_model stores one)."""
    out = dict(state)
    for aliases in groups:
        present = [a for a in aliases if a in out]
        if present:
            for alias in aliases:
                out.setdefault(alias, out[present[0]])
    return out


def _complete_tied(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return complete_tied(state, tied_groups(model))


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state on CPU. Collective under FSDP2: every rank must call it; only
    rank 0 receives the tensors (others get an empty dict)."""
    model = unwrap(module)
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        # full_state_dict=True gathers every entry into a plain tensor.
        return cast("dict[str, torch.Tensor]", get_model_state_dict(model, options=opts))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def read_checkpoint_tensors(
    folder: Path, trainable: list[str], tied: list[list[str]]
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """A checkpoint's full model state and per-parameter optimizer state, by parameter name,
    whatever its format, in this one process (no process group needed).

    ``trainable`` names the optimizer's parameters in its order and ``tied`` the groups of tied
    names (both in the checkpoint's state.json): a full-format optimizer.pt keys its state by
    position, and model.safetensors stores a tied tensor under one of its names only.
    """
    if (folder / "dcp").is_dir():
        import tempfile

        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "full.pt"
            dcp_to_torch_save(str(folder / "dcp"), str(out))
            full = torch.load(out, weights_only=True, map_location="cpu")
        optim = {str(k): v for k, v in full["optim"]["state"].items()}
        return dict(full["model"]), optim
    from safetensors.torch import load_file

    model = complete_tied(load_file(str(folder / "model.safetensors")), tied)
    saved = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
    order = [i for group in saved["param_groups"] for i in group["params"]]
    by_position = dict(zip(order, trainable, strict=True))
    return model, {by_position[i]: v for i, v in saved["state"].items()}
