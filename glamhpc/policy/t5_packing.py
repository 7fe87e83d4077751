"""The layout of `packed_t5_scores` (glamhpc.policy.scoring): K candidates packed into one T5
decoder row per prompt, the block-causal self-attention bias, and T5 attention from projected
K/V. Pure tensor functions over the model's own modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from transformers.models.t5.modeling_t5 import (
        T5Attention,
        T5Block,
        T5LayerSelfAttention,
        T5Stack,
    )

    from glamhpc.policy.scoring import Candidates


@dataclass(frozen=True)
class Packing:
    """Where every candidate token sits in the packed decoder sequence of one prompt.

    Packed sequence: position 0 is the shared decoder start; then, candidate after candidate,
    the tokens each candidate feeds to the decoder (its action tokens; </s> is only a label), so
    N = 1 + sum_k (n_k - 1) with n_k the candidate's token count including </s>. No padding.
    """

    real_pos: torch.Tensor  # [N] decoder position of each packed token (0 = start)
    group: torch.Tensor  # [N] candidate index, -1 for the shared start
    inputs: torch.Tensor  # [N] token fed at that packed position
    term_pos: torch.Tensor  # [M] packed position whose prediction is a scored term
    term_tok: torch.Tensor  # [M] the label predicted there
    term_cand: torch.Tensor  # [M] the candidate the term belongs to


def packing(cands: Candidates, start: int) -> Packing:
    ids = cands.ids.tolist()
    lengths = cands.mask.sum(1).tolist()
    real_pos, group, inputs = [0], [-1], [start]
    term_pos, term_tok, term_cand = [], [], []
    for k, (row, n) in enumerate(zip(ids, lengths, strict=True)):
        prev = 0  # the packed position that predicts this candidate's next token
        for j in range(n):
            term_pos.append(prev)
            term_tok.append(row[j])
            term_cand.append(k)
            if j < n - 1:  # the last token (</s>) is predicted but never fed
                real_pos.append(j + 1)
                group.append(k)
                inputs.append(row[j])
                prev = len(inputs) - 1
    columns = (real_pos, group, inputs, term_pos, term_tok, term_cand)
    return Packing(*(torch.tensor(c, dtype=torch.long, device=cands.ids.device) for c in columns))


def self_attention_bias(decoder: T5Stack, pack: Packing, dtype: torch.dtype) -> torch.Tensor:
    """[1, H, N, N] relative position bias + block-causal mask of the packed self-attention.

    A candidate token sees the shared start and the earlier tokens of its own candidate, at
    their real decoder positions, which is exactly what it sees in its own unpacked sequence.
    """
    # nn.ModuleList items are typed nn.Module: name the T5 classes they hold.
    block = cast("T5Block", decoder.block[0])
    attn = cast("T5LayerSelfAttention", block.layer[0]).SelfAttention
    q_pos, k_pos = pack.real_pos[:, None], pack.real_pos[None, :]
    same = (pack.group[:, None] == pack.group[None, :]) & (k_pos <= q_pos)
    allowed = same | (pack.group[None, :] == -1)
    buckets = attn._relative_position_bucket(
        k_pos - q_pos,
        bidirectional=False,
        num_buckets=attn.relative_attention_num_buckets,
        max_distance=attn.relative_attention_max_distance,
    )
    bias = attn.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0).to(dtype)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


def attend(
    attn: T5Attention,
    hidden: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """T5 attention (no 1/sqrt(d) scaling; bias added to the scores) from projected K/V."""
    b, n, _ = hidden.shape
    q = attn.q(hidden).view(b, n, attn.n_heads, attn.key_value_proj_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias, scale=1.0)
    return attn.o(out.transpose(1, 2).reshape(b, n, -1))


def heads(attn: T5Attention, proj: nn.Linear, states: torch.Tensor) -> torch.Tensor:
    b, n, _ = states.shape
    return proj(states).view(b, n, attn.n_heads, attn.key_value_proj_dim).transpose(1, 2)
