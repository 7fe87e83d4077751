"""A trained Symbolic-PPO agent outside training: its export and its evaluation player.

The export (``<run dir>/model``) holds the network's weights (``symbolic.safetensors``, batch-norm
running statistics included), the instruction vocabulary and ``glamhpc.json`` (``agent:
symbolic``, the network sizes, action space, level, frames), with a manifest written last, as
GLAM's export. `SymbolicPlayer` plays it through evaluation's `EnvAgent` protocol: it reads each
env's symbolic view and mission and keeps one LSTM memory per env, reset when its episode ends.
The network runs in eval mode there (batch norm from its running statistics), as BabyAI
evaluates; in training it runs in train mode, acting included, as BabyAI trains.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from glamhpc import __version__
from glamhpc.agents.symbolic.model import Arch, SymbolicACModel
from glamhpc.agents.symbolic.rollout import Observations, act
from glamhpc.agents.symbolic.vocab import VOCAB_FILE, load_vocab, save_vocab
from glamhpc.checkpoint import write_manifest
from glamhpc.fsutil import atomic_write_text

if TYPE_CHECKING:
    from glamhpc.envs.batch import EnvBatch, StepResult

AGENT = "symbolic"
WEIGHTS_FILE = "symbolic.safetensors"
META_FILE = "glamhpc.json"


def export(net: SymbolicACModel, vocab: list[str], folder: Path, meta: dict[str, Any]) -> None:
    """Write the export folder (``meta``: action_space, level, frames, ... for glamhpc.json)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(weights, str(folder / WEIGHTS_FILE))
    save_vocab(folder / VOCAB_FILE, vocab)
    info = {"agent": AGENT, "arch": net.arch.to_dict(), **meta, "glamhpc_version": __version__}
    atomic_write_text(folder / META_FILE, json.dumps(info, indent=1))
    write_manifest(folder)  # last: evaluation verifies the folder against it


@dataclass
class SymbolicModel:
    """An exported network with its vocabulary, ready to play."""

    net: SymbolicACModel
    vocab: list[str]


def load_exported(folder: Path, device: str = "auto") -> SymbolicModel:
    """The network of an export (already verified by evaluation), in eval mode.

    Raises:
        ValueError: a glamhpc.json without usable network sizes, or weights of another shape.
    """
    from safetensors.torch import load_file

    meta = json.loads((folder / META_FILE).read_text())
    try:
        arch = Arch(**{k: int(v) for k, v in meta["arch"].items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{folder / META_FILE}: no usable 'arch' ({exc}); re-export") from None
    vocab = load_vocab(folder / VOCAB_FILE)
    if len(vocab) != arch.vocab_size:
        raise ValueError(f"{folder}: the vocabulary has {len(vocab)} words, the network "
                         f"{arch.vocab_size}; re-export the model")  # fmt: skip
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    net = SymbolicACModel(arch).to("cuda" if use_cuda else "cpu")
    net.load_state_dict(load_file(str(folder / WEIGHTS_FILE), device=str(net_device(net))))
    net.eval()
    return SymbolicModel(net, vocab)


def net_device(net: SymbolicACModel) -> torch.device:
    return next(net.parameters()).device


class SymbolicPlayer:
    """The `EnvAgent` of a Symbolic-PPO network: one memory per env, cut at episode ends."""

    def __init__(self, model: SymbolicModel, num_candidates: int) -> None:
        if num_candidates != model.net.arch.num_actions:
            raise ValueError(
                f"the Symbolic-PPO network has {model.net.arch.num_actions} actions, the suite "
                f"item {num_candidates} candidates"
            )
        self.model = model
        self.memory = torch.zeros(0)

    def begin(self, envs: EnvBatch) -> None:
        net = self.model.net
        self.memory = torch.zeros(envs.num_envs, net.memory_size, device=net_device(net))

    @torch.inference_mode()
    def logprobs(self, envs: EnvBatch, active: list[int], prompts: list[str]) -> torch.Tensor:
        obs = Observations.read(envs, self.model.vocab, net_device(self.model.net))
        rows = torch.as_tensor(active, dtype=torch.long, device=obs.images.device)
        picked = Observations(obs.images[rows], obs.tokens[rows], obs.lengths[rows])
        logprobs, _, memory = act(self.model.net, picked, self.memory[rows])
        self.memory[rows] = memory
        return logprobs.float().cpu()

    def after_step(self, actions: Sequence[int], step: StepResult) -> None:
        for info in step.episodes:
            self.memory[info.env_index] = 0.0
