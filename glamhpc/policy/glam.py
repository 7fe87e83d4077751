"""GlamPolicy: an LLM scoring a fixed set of candidate actions, plus a value head.

pi(a_k | prompt) comes from the candidates' scores (see `scoring`), normalised over the K
candidates; V(prompt) is an MLP on the decoder's position-0 state, computed in the same pass.
With ``head="action"`` (the paper's NPAE baselines) an fp32 MLP on that same position-0 state
gives the K logits instead, and only the encoder and one decoder step run (`action_head`).
The whole LLM is trainable (the paper fine-tunes everything); the value head is float32 whatever
the LLM's dtype, so value regression does not suffer from bf16 rounding.

Precision (`compute_dtype`): None runs the LLM in its weights' dtype. bfloat16 runs the LLM's
forward under autocast (bf16 matmuls on fp32 weights, which stay the optimizer's master copy);
the token log-softmax (`scoring._logits` casts to fp32 first) and the value head (outside autocast,
on fp32 inputs) stay fp32, so the log-probs and values PPO differentiates are fp32 either way.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import nn

from glamhpc.policy import sampling
from glamhpc.policy.action_head import sigmoid_mlp, start_states
from glamhpc.policy.scoring import (
    Candidates,
    ScoreOutput,
    ScoringMethod,
    encode_candidates,
    policy_logits,
    score_prompts,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["GlamPolicy", "action_stats"]


def action_stats(
    logprobs: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(actions) [B], entropy [B]) from normalised candidate log-probs [B, K].

    A free function so that a trainer holding the policy inside DDP/FSDP (which must be called
    through `forward`) computes exactly what `GlamPolicy.evaluate` does.
    """
    chosen = logprobs.gather(1, actions.to(logprobs.device).long().view(-1, 1)).squeeze(1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return chosen, entropy


class GlamPolicy(nn.Module):
    """The GLAM actor-critic over a fixed list of candidate action strings.

    Args:
        model: a seq2seq LM (`load_model`), on its target device and dtype.
        tokenizer: its tokenizer (needs eos and pad tokens).
        action_texts: the K candidate actions, in env-action order.
        scoring: `"glam"` = log_softmax(scores) (correct); `"paper"` = softmax(P / max P), the
            paper-era rule kept for parity runs.
        max_batch_tokens: token budget of one scoring forward (prompts are chunked beyond it).
        value_hidden: width of the value MLP (1024 in the paper).
        method: scoring implementation (`"fast"`, or a reference path for tests/benchmarks).
        disable_dropout: set every dropout of the LLM to 0 (default). PPO compares the policy
            that acted with the one being updated; dropout noise makes that ratio differ from 1
            before any update and turns the clipping into noise clipping.
        prompt_cache_size: how many prompt tokenisations to keep (prompts recur: every PPO epoch
            re-scores the rollout's prompts).
        compute_dtype: None (the weights' dtype) or torch.bfloat16 (autocast around the LLM's
            forward; `model.precision=bf16-mixed`). The device type comes from the model.
        head: `"scoring"` (GLAM: the LLM scores the candidate texts) or `"action"`: an fp32 MLP
            d_model -> action_hidden -> Sigmoid -> action_hidden -> Sigmoid -> K on the decoder's
            position-0 state (upstream's NPAE head); ``scoring`` and ``method`` are then unused.
            The LM head gets no gradient with it: an untied one is frozen (see `_freeze_lm_head`).
        action_hidden: width of the action MLP (1024 in upstream).
    """

    # Buffers registered in __init__ (nn.Module.__getattr__ is typed Tensor | Module).
    candidate_ids: torch.Tensor
    candidate_mask: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        action_texts: Sequence[str],
        scoring: Literal["glam", "paper"] = "glam",
        max_batch_tokens: int | None = 32768,
        value_hidden: int = 1024,
        method: ScoringMethod = "fast",
        disable_dropout: bool = True,
        prompt_cache_size: int = 16384,
        compute_dtype: torch.dtype | None = None,
        head: Literal["scoring", "action"] = "scoring",
        action_hidden: int = 1024,
    ) -> None:
        super().__init__()
        if scoring not in ("glam", "paper"):
            raise ValueError(f"unknown scoring {scoring!r}; expected 'glam' or 'paper'")
        if head not in ("scoring", "action"):
            raise ValueError(f"unknown head {head!r}; expected 'scoring' or 'action'")
        self.head: Literal["scoring", "action"] = head
        if compute_dtype not in (None, torch.float32, torch.bfloat16):
            raise ValueError(f"unsupported compute_dtype {compute_dtype}; use None or bfloat16")
        # fp32 autocast is a no-op that still costs a context per call: treat it as None.
        self.compute_dtype = None if compute_dtype == torch.float32 else compute_dtype
        self.model = model
        self.tokenizer = tokenizer
        self.action_texts: tuple[str, ...] = tuple(action_texts)
        self.scoring: Literal["glam", "paper"] = scoring
        self.method: ScoringMethod = method
        self.max_batch_tokens = max_batch_tokens
        config = cast("PretrainedConfig", model.config)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else config.pad_token_id)
        cands = encode_candidates(tokenizer, self.action_texts, self.pad_id)
        # Buffers (not persistent: they derive from the tokenizer) so `.to(device)` moves them.
        self.register_buffer("candidate_ids", cands.ids, persistent=False)
        self.register_buffer("candidate_mask", cands.mask, persistent=False)
        d_model = int(config.d_model)
        device = next(model.parameters()).device
        self.value_head = sigmoid_mlp(d_model, value_hidden, 1).to(device, torch.float32)
        # Built after the value head: a scoring policy draws exactly the same init as before.
        self.action_head: nn.Sequential | None = None
        if head == "action":
            # fp32 whatever the LLM's dtype, like the value head: the logits PPO differentiates.
            mlp = sigmoid_mlp(d_model, action_hidden, len(self.action_texts))
            self.action_head = mlp.to(device, torch.float32)
            _freeze_lm_head(model)
        if disable_dropout:
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
        self._prompt_cache: OrderedDict[str, list[int]] = OrderedDict()
        self._prompt_cache_size = prompt_cache_size

    @property
    def num_actions(self) -> int:
        return len(self.action_texts)

    @property
    def candidates(self) -> Candidates:
        return Candidates(self.candidate_ids, self.candidate_mask, self.action_texts)

    # -- tokenisation ------------------------------------------------------------------------

    def tokenize(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt (ending with </s>), through a small LRU cache."""
        cache = self._prompt_cache
        missing = list(dict.fromkeys(p for p in prompts if p not in cache))
        if missing:
            encoded = self.tokenizer(missing, add_special_tokens=True)["input_ids"]
            for prompt, ids in zip(missing, encoded, strict=True):
                cache[prompt] = list(ids)
        out: list[list[int]] = []
        for prompt in prompts:
            cache.move_to_end(prompt)
            out.append(cache[prompt])
        while len(cache) > self._prompt_cache_size:
            cache.popitem(last=False)
        return out

    # -- scoring -----------------------------------------------------------------------------

    def score(self, prompts: Sequence[str]) -> ScoreOutput:
        """Raw candidate scores [B, K] and the value-head input [B, d_model] (float32)."""
        if len(prompts) == 0:
            raise ValueError("no prompts")
        prompt_ids = self.tokenize(prompts)
        with self._autocast():
            return score_prompts(
                self.model,
                prompt_ids,
                self.candidates,
                pad_id=self.pad_id,
                method=self.method,
                max_batch_tokens=self.max_batch_tokens,
            )

    def _autocast(self) -> AbstractContextManager[object]:
        """bf16 autocast on the LLM's device type, or nothing (fp32 / the weights' dtype)."""
        if self.compute_dtype is None:
            return nullcontext()
        device_type = next(self.model.parameters()).device.type
        return torch.autocast(device_type=device_type, dtype=self.compute_dtype)

    def start_state(self, prompts: Sequence[str]) -> torch.Tensor:
        """The decoder's position-0 final state [B, d_model] float32 (both heads' input), from
        the encoder and one decoder step: no candidate is decoded."""
        if len(prompts) == 0:
            raise ValueError("no prompts")
        prompt_ids = self.tokenize(prompts)
        with self._autocast():
            hidden = start_states(
                self.model,
                prompt_ids,
                pad_id=self.pad_id,
                max_batch_tokens=self.max_batch_tokens,
            )
        return hidden.float()

    def forward(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log pi(.|prompt) [B, K] float32, normalised over candidates; V(prompt) [B] float32)."""
        if self.action_head is not None:
            hidden = self.start_state(prompts)
            logprobs = torch.log_softmax(self.action_head(hidden), dim=-1)
        else:
            out = self.score(prompts)
            logprobs = policy_logits(out.scores, self.scoring)
            hidden = out.hidden.float()
        # Outside autocast (its context has closed) and on fp32 input: fp32 heads.
        values = self.value_head(hidden).squeeze(-1)
        return logprobs, values

    @torch.no_grad()
    def act(
        self,
        prompts: Sequence[str],
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or argmax) one action per prompt, with the one sampler (`policy.sampling`).

        The uniforms come from ``generator`` on CPU, so a seeded generator gives the same
        actions whatever device the model runs on.

        Returns:
            (actions [B] long, log pi(action) [B], values [B], entropy [B]), all float32 on CPU.
        """
        logprobs, values = self(prompts)
        logprobs = logprobs.float()
        if greedy:
            actions = sampling.greedy(logprobs)
        else:
            uniforms = torch.rand(logprobs.shape[0], generator=generator, dtype=torch.float64)
            actions = sampling.sample_from_uniforms(logprobs, uniforms)
        chosen, entropy = action_stats(logprobs, actions.to(logprobs.device))
        return actions.cpu(), chosen.cpu(), values.float().cpu(), entropy.cpu()

    def evaluate(
        self, prompts: Sequence[str], actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """With gradients: (log pi(actions) [B], entropy [B], values [B]) on the model's device."""
        logprobs, values = self(prompts)
        chosen, entropy = action_stats(logprobs, actions)
        return chosen, entropy, values


def _freeze_lm_head(model: nn.Module) -> None:
    """With the action head nothing reads the LM head: freeze it when it is its own matrix.

    Upstream keeps it in the optimizer, where it never receives a gradient, so Adam never moves
    it; frozen, it is the same model, and it stays out of DDP's reducer (which would wait for its
    gradient forever) and of the optimizer state. A head tied to the input embeddings (original
    T5) is the embedding matrix, which is used and trained: it is left alone.
    """
    get_out = getattr(model, "get_output_embeddings", None)
    get_in = getattr(model, "get_input_embeddings", None)
    lm_head = get_out() if callable(get_out) else None
    embeddings = get_in() if callable(get_in) else None
    if not isinstance(lm_head, nn.Module) or not isinstance(embeddings, nn.Module):
        return
    if lm_head.weight is not embeddings.weight:
        lm_head.weight.requires_grad_(False)
