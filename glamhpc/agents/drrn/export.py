"""A trained DRRN as `glamhpc eval` reads it: the export folder and the scorer built from it.

``<run>/model/`` holds ``drrn.safetensors`` (the network), ``tokenizer.json`` (its tokenizer),
``glamhpc.json`` (``agent: drrn``, the sizes, and the fields every export carries: action space
and texts, level, history, frames) and ``MANIFEST.json``, written last. Nothing is unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from glamhpc import __version__
from glamhpc.agents.drrn.learn import action_logprobs
from glamhpc.agents.drrn.network import DRRN
from glamhpc.agents.drrn.tokenizer import TOKENIZER_FILE, encode, load_tokenizer, save_tokenizer
from glamhpc.checkpoint import write_manifest
from glamhpc.distributed.context import pick_device
from glamhpc.fsutil import atomic_write_text

if TYPE_CHECKING:
    from tokenizers import Tokenizer

WEIGHTS_FILE = "drrn.safetensors"
META_FILE = "glamhpc.json"


def export_drrn(net: DRRN, tokenizer: Tokenizer, folder: Path, meta: dict[str, Any]) -> None:
    """Write the export folder (see the module docstring)."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    save_model(net, str(folder / WEIGHTS_FILE))
    save_tokenizer(tokenizer, folder / TOKENIZER_FILE)
    sizes = {"vocab_size": net.embedding.num_embeddings, "hidden": net.embedding.embedding_dim}
    full = {**meta, "agent": "drrn", **sizes, "glamhpc_version": __version__}
    atomic_write_text(folder / META_FILE, json.dumps(full, indent=1))
    write_manifest(folder)  # last: eval verifies the folder against it before loading


def load_drrn(folder: Path, device: str = "auto") -> tuple[DRRN, Tokenizer]:
    """The network and tokenizer of an export folder (verified by the caller), on ``device``
    (auto, cpu, cuda, cuda:N).

    Raises:
        ValueError: glamhpc.json lacks the sizes or the weights do not fit them.
    """
    from safetensors.torch import load_model

    meta = json.loads((folder / META_FILE).read_text())
    vocab, hidden = meta.get("vocab_size"), meta.get("hidden")
    if not (isinstance(vocab, int) and isinstance(hidden, int) and vocab > 0 and hidden > 0):
        raise ValueError(f"{folder / META_FILE} lacks positive integer vocab_size and hidden")
    net = DRRN(vocab, hidden)
    load_model(net, str(folder / WEIGHTS_FILE))
    return net.to(pick_device(device)).eval(), load_tokenizer(folder / TOKENIZER_FILE)


def drrn_scorer(
    net: DRRN, tokenizer: Tokenizer, action_texts: Sequence[str]
) -> Callable[[list[str]], torch.Tensor]:
    """Evaluation's policy: prompts -> log softmax(Q) over ``action_texts`` (upstream samples
    its test actions from softmax(Q) too). Any candidate texts work: actions are read as text."""
    actions = encode(tokenizer, action_texts)

    def score(prompts: list[str]) -> torch.Tensor:
        return action_logprobs(net, encode(tokenizer, prompts), actions)

    return score
