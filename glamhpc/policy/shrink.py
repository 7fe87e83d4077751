"""A shrunk stand-in of a hub model, written as a Hugging Face hub cache entry (`--smoke`).

The stand-in keeps the family's layout (FLAN-T5 = T5 v1.1: gated-GELU feed-forward, untied
lm_head, relative position buckets) at a width and depth that trains in seconds on a CPU, with
random weights and tiny-t5's fast tokenizer. It is written exactly where and how the hub client
caches a download (``models--org--name/snapshots/<rev>/`` + ``refs/main``), so loading it goes
through the same offline loader, with the same repo id, as the real weights do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from glamhpc.policy.hubcache import repo_folder
from glamhpc.policy.shapes import FLAN_T5_SHAPES
from glamhpc.policy.t5 import build_from_config, quiet_loading, t5_config_for
from glamhpc.policy.tiny import build_tiny_t5

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: Width and depth of every shrunk stand-in (1-2 layers, small width, as the real layout).
SHRUNK_SHAPE = {"d_model": 64, "d_ff": 128, "num_heads": 4, "d_kv": 16, "num_layers": 2}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class ShrinkError(ValueError):
    """The model has no shrunk stand-in (not a T5-family hub id)."""


def write_shrunk_hub_model(name: str, cache_dir: Path, seed: int = 0) -> Path:
    """Write a random-init stand-in of hub model ``name`` into the hub cache ``cache_dir``;
    returns the snapshot folder. tiny-t5 needs no stand-in (it is built locally already)."""
    repo = name if name in FLAN_T5_SHAPES else f"google/{name}"
    if repo not in FLAN_T5_SHAPES:
        raise ShrinkError(
            f"--smoke shrinks FLAN-T5 models (and runs tiny-t5 as it is); {name!r} has no "
            "shrunk stand-in: check that config with a short real run instead"
        )
    tokenizer_folder = build_tiny_t5()
    vocab = json.loads((tokenizer_folder / "config.json").read_text())["vocab_size"]
    config = t5_config_for(
        repo, **SHRUNK_SHAPE, num_decoder_layers=SHRUNK_SHAPE["num_layers"], vocab_size=vocab
    )
    torch.manual_seed(seed)
    model = cast("PreTrainedModel", build_from_config(config))
    revision = hashlib.sha1(f"glamhpc-smoke:{repo}:{seed}".encode()).hexdigest()
    entry = cache_dir / repo_folder(repo)
    snapshot = entry / "snapshots" / revision
    if snapshot.exists():
        shutil.rmtree(snapshot)
    snapshot.mkdir(parents=True)
    with quiet_loading():
        model.save_pretrained(snapshot)
    for file in _TOKENIZER_FILES:
        shutil.copyfile(tokenizer_folder / file, snapshot / file)
    (entry / "refs").mkdir(exist_ok=True)
    (entry / "refs" / "main").write_text(revision)
    return snapshot


__all__ = ["SHRUNK_SHAPE", "ShrinkError", "write_shrunk_hub_model"]
