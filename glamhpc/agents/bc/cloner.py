"""The behaviour-cloning objective: seq2seq cross-entropy on the action text, as upstream.

`Cloner` holds the LLM under the attribute ``model``, as `GlamPolicy` does, so its state dict,
checkpoints and final export have the GLAM policy's names and `glamhpc eval` loads a BC run like
a GLAM run and scores the candidates the same way. It returns token SUMS (loss, correct
predictions, entropy, count): the trainer divides by the global token count of the step, so a
batch split over ranks has the single-rank mean (to the order of the sums).

The decoder is trained on the action's tokens followed by exactly one ``</s>``: the sequence
candidate scoring sums log-probabilities over (`glamhpc.policy.scoring.encode_candidates`).
Inputs are padded to the longest prompt of the batch, not to 1024 as upstream (padding is
masked; it only costs compute).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


def encode_pairs(
    tokenizer: Any, prompts: Sequence[str], actions: Sequence[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels) of a batch; labels are ``IGNORE`` past each action."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    inputs = [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    targets = []
    for ids in tokenizer(list(actions), add_special_tokens=True)["input_ids"]:
        ids = list(ids)
        while ids and ids[-1] == eos:  # exactly one </s>, whatever the tokenizer appends
            ids.pop()
        targets.append([*ids, eos])
    width = max(len(x) for x in inputs)
    input_ids = torch.full((len(inputs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for i, ids in enumerate(inputs):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    labels = torch.full((len(targets), max(len(t) for t in targets)), IGNORE, dtype=torch.long)
    for i, ids in enumerate(targets):
        labels[i, : len(ids)] = torch.tensor(ids)
    return input_ids.to(device), mask.to(device), labels.to(device)


def label_tokens(tokenizer: Any, actions: Sequence[str]) -> int:
    """Target tokens of ``actions`` (what a step's loss is averaged over)."""
    eos = tokenizer.eos_token_id
    total = 0
    for ids in tokenizer(list(actions), add_special_tokens=True)["input_ids"]:
        ids = list(ids)
        while ids and ids[-1] == eos:
            ids.pop()
        total += len(ids) + 1
    return total


class Cloner(nn.Module):
    """Teacher-forced seq2seq LM whose forward returns the batch's token sums."""

    def __init__(self, model: nn.Module, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.compute_dtype = compute_dtype

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """[4] float32: summed cross-entropy, correct argmax tokens, entropy, target tokens."""
        ctx: Any = (
            torch.autocast(device_type=input_ids.device.type, dtype=self.compute_dtype)
            if self.compute_dtype is not None
            else nullcontext()
        )
        with ctx:
            # T5 builds the decoder inputs by shifting the labels right (IGNORE becomes pad).
            logits = self.model(
                input_ids=input_ids, attention_mask=attention_mask, labels=labels
            ).logits
        logp = F.log_softmax(logits.float(), dim=-1)
        keep = labels != IGNORE
        target = labels.clamp(min=0)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            correct = (logp.argmax(-1) == target) & keep
            entropy = -(logp.exp() * logp).sum(-1)
        return torch.stack(
            [
                (nll * keep).sum(),
                correct.sum().float(),
                (entropy * keep).sum(),
                keep.sum().float(),
            ]
        )
