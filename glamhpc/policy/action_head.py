"""The pieces of the action-head policy (`policy.head=action`, the paper's NPAE baselines).

Instead of scoring the candidate texts, an MLP maps the decoder's position-0 final state (the
state the value head reads) to one logit per action, as upstream's NPAE-Flan-T5. That state needs
the encoder over the prompt and ONE decoder step (the decoder-start token): no candidate tokens
are decoded and no LM-head matmul over the vocabulary runs, which is what `start_states` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["sigmoid_mlp", "start_states"]


def sigmoid_mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """d_in -> hidden -> Sigmoid -> hidden -> Sigmoid -> d_out (upstream's value/action heads)."""
    return nn.Sequential(
        nn.Linear(d_in, hidden),
        nn.Sigmoid(),
        nn.Linear(hidden, hidden),
        nn.Sigmoid(),
        nn.Linear(hidden, d_out),
    )


def _chunks(lengths: Sequence[int], max_batch_tokens: int | None) -> list[list[int]]:
    """Prompt indices, shortest first, grouped so that rows x longest prompt fits the budget
    (a single prompt over budget is a chunk of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    if max_batch_tokens is None:
        return [order]
    chunks: list[list[int]] = [[]]
    for i in order:
        if chunks[-1] and (len(chunks[-1]) + 1) * lengths[i] > max_batch_tokens:
            chunks.append([])
        chunks[-1].append(i)
    return chunks


def start_states(
    model: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    max_batch_tokens: int | None = None,
) -> torch.Tensor:
    """The decoder's final state (after the final layer norm) at position 0, per prompt.

    Returns [B, d_model] in the model's compute dtype, in the order of ``prompt_ids``: the same
    tensor as `scoring.ScoreOutput.hidden`, for the price of the encoder and one decoder step.
    """
    if not prompt_ids:
        raise ValueError("no prompts")
    hf = cast("PreTrainedModel", model)
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        raise ValueError("model.config.decoder_start_token_id is not set (see policy.models)")
    device = next(model.parameters()).device
    chunks = _chunks([len(p) for p in prompt_ids], max_batch_tokens)
    outs: list[torch.Tensor] = []
    for chunk in chunks:
        width = max(len(prompt_ids[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, : len(prompt_ids[i])] = torch.as_tensor(prompt_ids[i], dtype=torch.long)
            mask[row, : len(prompt_ids[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        enc = hf.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        # No cache: nothing is decoded after this step (and a cache mutated inside a
        # checkpoint-wrapped block would be mutated again when backward re-runs it).
        dec = hf.get_decoder()(
            input_ids=torch.full((len(chunk), 1), int(start), dtype=torch.long, device=device),
            encoder_hidden_states=enc,
            encoder_attention_mask=mask,
            use_cache=False,
        ).last_hidden_state
        outs.append(dec[:, 0])
    order = torch.tensor([i for c in chunks for i in c], device=device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=device)
    return torch.cat(outs)[inverse]
