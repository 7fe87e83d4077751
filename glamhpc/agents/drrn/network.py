"""The Deep Reinforcement Relevance Network (He et al. 2016) as upstream GLAM's DRRN builds it:
token embeddings, one GRU encoding the observation text, another encoding each action text, and
Q(s, a) = scorer(relu(hidden([h_s; h_a]))) from the two final GRU states.

Candidate actions are the same for every env of a batch, so they are encoded once per forward
and paired with every state: Q comes out as a [B, K] matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

#: Token-id sequences (one per text), unpadded.
Seqs = Sequence[Sequence[int]]


def pad(seqs: Seqs, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, L] zero-padded, lengths [B]) of non-empty sequences."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    if len(seqs) == 0 or int(lengths.min()) < 1:
        raise ValueError("every sequence needs at least one token")
    ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids.to(device), lengths


def param_count(vocab_size: int, hidden: int) -> int:
    """Parameters of `DRRN` (vocab_size, hidden), from the architecture alone."""
    gru = 3 * (hidden * hidden + hidden * hidden + 2 * hidden)  # 3 gates: W_ih, W_hh, 2 biases
    return vocab_size * hidden + 2 * gru + (2 * hidden * hidden + hidden) + (hidden + 1)


class DRRN(nn.Module):
    """Q(s, a) over text states and text actions (upstream: embedding 128, GRUs 128)."""

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden)
        self.obs_encoder = nn.GRU(hidden, hidden, batch_first=True)
        self.act_encoder = nn.GRU(hidden, hidden, batch_first=True)
        self.hidden = nn.Linear(2 * hidden, hidden)
        self.act_scorer = nn.Linear(hidden, 1)

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def encode(self, seqs: Seqs, rnn: nn.GRU) -> torch.Tensor:
        """The GRU's state after each sequence's last real token: [B, hidden]."""
        ids, lengths = pad(seqs, self.device)
        packed = pack_padded_sequence(
            self.embedding(ids), lengths, batch_first=True, enforce_sorted=False
        )
        _, last = rnn(packed)  # packed input: the state at each sequence's own end
        return last[0]

    def forward(self, states: Seqs, actions: Seqs) -> torch.Tensor:
        """Q-values [len(states), len(actions)] of every state with every candidate action."""
        h_s = self.encode(states, self.obs_encoder)
        h_a = self.encode(actions, self.act_encoder)
        b, k = h_s.shape[0], h_a.shape[0]
        pairs = torch.cat([h_s[:, None].expand(b, k, -1), h_a[None].expand(b, k, -1)], dim=-1)
        q: torch.Tensor = self.act_scorer(torch.relu(self.hidden(pairs))).squeeze(-1)
        return q
