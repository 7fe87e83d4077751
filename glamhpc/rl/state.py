"""What a run saves and restores: checkpoints (exact resume) and the final model export.

A checkpoint holds the model and optimizer (sharded under FSDP2), every rank's env states and
the counters and learning-curve history; nothing else is needed to continue bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glamhpc import __version__
from glamhpc.checkpoint import (
    Checkpointer,
    CheckpointError,
    checkpoint_name,
    read_global_state,
    read_rank_states,
    write_manifest,
)
from glamhpc.config import Config, to_dict
from glamhpc.distributed import (
    DistContext,
    load_model_state,
    save_model_state,
    tied_groups,
    unwrap,
)
from glamhpc.envs.batch import EnvBatch, merge_state_dicts
from glamhpc.fsutil import atomic_write_text
from glamhpc.secrets import redact_config


@dataclass
class Counters:
    update: int = 0
    frames: int = 0
    episodes: int = 0
    wall_seconds: float = 0.0


@dataclass
class Restored:
    counters: Counters
    history: list[dict[str, float]]


#: Activation checkpointing inserts this module level; state dicts (and DCP) leave it out.
_WRAPPED = "_checkpoint_wrapped_module."


def trainable_names(policy: nn.Module) -> list[str]:
    """The optimizer's parameters in its order, named as in the model's state dict."""
    return [
        n.replace(_WRAPPED, "") for n, p in unwrap(policy).named_parameters() if p.requires_grad
    ]


def save_checkpoint(
    checkpointer: Checkpointer,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    ctx: DistContext,
    cfg: Config,
    counters: Counters,
    history: list[dict[str, float]],
    env_state: dict[str, Any],
    write_extra: Callable[[Path], None] | None = None,
    extra_state: Mapping[str, Any] | None = None,
) -> Path:
    """Collective: every rank writes its part; returns the checkpoint folder.

    ``write_extra(folder)`` (rank 0) adds an agent's own files (DRRN: its replay memory) and
    ``extra_state`` its own state.json entries; both are covered by the manifest."""
    write_model, write_rank = save_model_state(policy, optimizer, ctx)

    def write_shared(folder: Path) -> None:
        write_model(folder)
        if write_extra is not None:
            write_extra(folder)

    global_state = {
        # Names of the optimizer's parameters in its order: optimizer.pt keys them by position.
        "trainable": trainable_names(policy),
        "tied": tied_groups(unwrap(policy)),
        "counters": asdict(counters),
        "history": history,
        "world_size": ctx.world_size,
        "glamhpc_version": __version__,
        # Checkpoints are copied and shared: never with setup secrets or URI credentials.
        "config": redact_config(to_dict(cfg)),
        **(extra_state or {}),
    }
    return checkpointer.save(
        counters.update,
        write_shared,
        {"rank": ctx.rank, "envs": env_state},
        global_state,
        write_rank,
    )


def restore_latest(
    checkpointer: Checkpointer,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    envs: EnvBatch,
    ctx: DistContext,
    read_extra: Callable[[Path], None] | None = None,
) -> Restored | None:
    """Collective: load the latest complete checkpoint, or None when there is none;
    ``read_extra(folder)`` loads what ``save_checkpoint``'s ``write_extra`` wrote.

    Raises:
        CheckpointError (on every rank): checkpoints exist but none verifies, or the newest
            intact one cannot be loaded (damaged before its manifest was written, or written
            by another model config).
    """
    found: tuple[str | None, str | None] = (None, None)
    if ctx.is_main:
        try:
            latest = checkpointer.find_latest()
            found = (latest.name if latest else None, None)
        except CheckpointError as exc:
            found = (None, str(exc))
    name, problem = ctx.broadcast_object(found)
    if problem is not None:
        raise CheckpointError(problem)
    if name is None:
        return None
    folder = checkpointer.folder / name
    try:
        load_model_state(policy, optimizer, folder, ctx)
        state = read_global_state(folder)
        # Each env's state carries its global index: a different world size picks its own envs.
        envs.load_state_dict(merge_state_dicts(r["envs"] for r in read_rank_states(folder)))
        if read_extra is not None:
            read_extra(folder)
        return Restored(Counters(**state["counters"]), state.get("history", []))
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors, torch.load, shapes, JSON keys: one line, not a trace
        lines = str(exc).strip().splitlines() or [""]
        reason = f"{type(exc).__name__}: {lines[0][:200]}"
        raise CheckpointError(
            f"checkpoint {folder} verifies but cannot be loaded ({reason}); it was damaged "
            "before its manifest was written or comes from another model config: move it aside "
            f"(mv {folder} {folder.parent}/bad-{name}) to resume from the one before"
        ) from exc


def saved_at(checkpointer: Checkpointer, update: int) -> bool:
    """The latest checkpoint is the one of ``update``."""
    latest = checkpointer.folder / "latest"
    return latest.is_file() and latest.read_text().strip() == checkpoint_name(update)


@dataclass(frozen=True)
class ExportInfo:
    """Metadata `glamhpc eval` needs to rebuild the policy from an export."""

    action_space: str
    action_texts: list[str]
    level: str
    scoring: str
    history: int
    value_hidden: int
    frames: int


def export_model(
    policy: nn.Module,
    tokenizer: Any,
    folder: Path,
    full_state: dict[str, torch.Tensor],
    info: ExportInfo,
) -> None:
    """Final model: HF folder (weights + tokenizer) + value head + `glamhpc.json` (rank 0)."""
    from safetensors.torch import save_file

    inner = unwrap(policy)
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(inner, "model", None)
    if model is not None and hasattr(model, "merge_and_unload"):  # LoRA: ship merged weights
        model.merge_and_unload().save_pretrained(folder)
    elif model is not None:
        weights = {k[len("model.") :]: v for k, v in full_state.items() if k.startswith("model.")}
        model.save_pretrained(folder, state_dict=weights)
    tokenizer.save_pretrained(folder)
    for name in ("value_head", "action_head"):  # action_head: policy.head=action only
        head = {
            k[len(name) + 1 :]: v.contiguous()
            for k, v in full_state.items()
            if k.startswith(f"{name}.")
        }
        if head:
            save_file(head, str(folder / f"{name}.safetensors"))
    meta = {**asdict(info), "glamhpc_version": __version__}
    atomic_write_text(folder / "glamhpc.json", json.dumps(meta, indent=1))
    # Last: `glamhpc eval` verifies the export against it before loading anything.
    write_manifest(folder)
