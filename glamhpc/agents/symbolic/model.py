"""BabyAI's `expert_filmcnn` actor-critic (Chevalier-Boisvert et al. 2019), written from its
description: the Symbolic-PPO baseline of the GLAM paper.

    image 7x7x3 -> conv 2x2 (pad 1), BN, ReLU, maxpool 2 -> conv 3x3, BN, ReLU, maxpool 2
    mission words -> embedding -> GRU -> last hidden state (the instruction embedding)
    2 FiLM blocks: conv 3x3 -> BN -> ReLU -> conv 3x3, then x * W(instr) + B(instr) -> BN -> ReLU
    maxpool 2 -> ReLU -> flatten (image_dim) -> LSTM cell (memory) -> actor MLP, critic MLP

The cell values of the view are fed as they are (object, colour and state indices as floats),
as BabyAI does for this architecture. Linear layers start from BabyAI's initialisation (rows of
unit norm, zero bias). ``memory`` is the LSTM's (h, c) side by side: [B, 2 * memory_dim].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Arch:
    """Sizes of the network (saved with an export, so evaluation rebuilds the same one)."""

    vocab_size: int
    num_actions: int
    image_dim: int = 128
    memory_dim: int = 128
    instr_dim: int = 128

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def init_linear(module: nn.Module) -> None:
    """BabyAI's initialisation of linear layers: N(0, 1) rows scaled to unit norm, zero bias."""
    if isinstance(module, nn.Linear):
        with torch.no_grad():
            module.weight.normal_(0.0, 1.0)
            module.weight /= module.weight.pow(2).sum(1, keepdim=True).sqrt()
            if module.bias is not None:
                module.bias.zero_()


class FiLMBlock(nn.Module):
    """Two convolutions whose output is scaled and shifted per channel by the instruction."""

    def __init__(self, instr_dim: int, out_channels: int, in_channels: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 128, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(128)
        self.conv2 = nn.Conv2d(128, out_channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.weight = nn.Linear(instr_dim, out_channels)
        self.bias = nn.Linear(instr_dim, out_channels)

    def forward(self, x: torch.Tensor, instr: torch.Tensor) -> torch.Tensor:
        x = self.conv2(F.relu(self.bn1(self.conv1(x))))
        x = x * self.weight(instr)[:, :, None, None] + self.bias(instr)[:, :, None, None]
        return F.relu(self.bn2(x))


class SymbolicACModel(nn.Module):
    """Actor-critic over (symbolic view, mission tokens, memory)."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.arch = arch
        self.image_conv = nn.Sequential(
            nn.Conv2d(3, 128, kernel_size=2, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(128, 128, kernel_size=3, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.word_embedding = nn.Embedding(arch.vocab_size, arch.instr_dim)
        self.instr_rnn = nn.GRU(arch.instr_dim, arch.instr_dim, batch_first=True)
        self.films = nn.ModuleList(
            [FiLMBlock(arch.instr_dim, 128), FiLMBlock(arch.instr_dim, arch.image_dim)]
        )
        self.film_pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.memory_rnn = nn.LSTMCell(arch.image_dim, arch.memory_dim)
        self.actor = nn.Sequential(
            nn.Linear(arch.memory_dim, 64), nn.Tanh(), nn.Linear(64, arch.num_actions)
        )
        self.critic = nn.Sequential(nn.Linear(arch.memory_dim, 64), nn.Tanh(), nn.Linear(64, 1))
        self.apply(init_linear)

    @property
    def memory_size(self) -> int:
        return 2 * self.arch.memory_dim

    def encode_instr(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, L] padded word indices, [B] lengths -> [B, instr_dim] (the GRU at the last word)."""
        out, _ = self.instr_rnn(self.word_embedding(tokens))
        return out[torch.arange(len(tokens), device=tokens.device), lengths - 1]

    def features(self, image: torch.Tensor, instr: torch.Tensor) -> torch.Tensor:
        """image [B, 7, 7, 3] (cell indices), instr [B, instr_dim] from `encode_instr` ->
        [B, image_dim]: the part of a step that does not depend on the memory."""
        x = self.image_conv(image.float().permute(0, 3, 1, 2))
        for film in self.films:
            x = film(x, instr)
        return F.relu(self.film_pool(x)).flatten(1)

    def recur(
        self, features: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features [B, image_dim], memory [B, 2 * memory_dim] -> (action log-probs [B, A],
        values [B], next memory)."""
        half = self.arch.memory_dim
        h, c = self.memory_rnn(features, (memory[:, :half], memory[:, half:]))
        logprobs = F.log_softmax(self.actor(h), dim=-1)
        return logprobs, self.critic(h).squeeze(1), torch.cat([h, c], dim=1)

    def forward(
        self, image: torch.Tensor, instr: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step: `features` then `recur`."""
        return self.recur(self.features(image, instr), memory)
