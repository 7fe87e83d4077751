"""Log-probabilities of candidate actions under a seq2seq LLM (the GLAM policy's scores).

For prompt p and candidate action a with tokens a_1..a_n, the score is

    s(p, a) = sum_{t=1..n+1} log P(y_t | p, y_<t),   y = a_1..a_n </s>,

with the decoder fed `[decoder_start] + a_1..a_n` (T5 convention). The end-of-sequence token is
part of the score, so a candidate that is a prefix of another ("drop" / "drop the key") is
scored as a complete action, not as the beginning of the longer one.

Four implementations with identical results (the tests hold them to 1e-5 in fp32, for scores
and for gradients):

- `naive_scores`: one full seq2seq forward per (prompt, candidate) pair: the reference.
- `lamorel_scores`: the encoder once per prompt, its output repeated K times, the decoder run on
  all B*K sequences (what lamorel does; each decoder layer still recomputes the cross-attention
  K/V over the repeated encoder states, ~45% of the naive FLOPs).
- `cached_scores`: the encoder once per prompt; decoder step 0 once per prompt with the cache on
  (it fills every layer's cross-attention K/V, gives the first action token's log-probs and the
  position-0 hidden state for the value head); then the cache is expanded over the K candidates
  (`EncoderDecoderCache.batch_repeat_interleave`) and only the remaining action tokens are
  decoded. Any transformers seq2seq model with an `EncoderDecoderCache` works.
- `packed_t5_scores` (T5 family): the same sharing, one step further: the K candidates' tokens
  are packed along the sequence axis of ONE decoder row per prompt (block-causal self-attention
  at each token's real position), so the cross-attention K/V are used without a K-fold copy, no
  separate step-0 pass runs, and candidates are not padded.

`fast_scores` picks `packed_t5_scores` where it is exact (T5, no active dropout, no FSDP-sharded
blocks) and `cached_scores` otherwise. All paths work with gradients (the PPO update): gradients
of all K candidates flow back into the shared encoder output and cross-attention K/V.

`score_prompts` tokenised prompts -> `ScoreOutput`, chunking by `max_batch_tokens`.

All functions are pure: they read the model's weights and return tensors; gradient mode, dtype
and device are the caller's choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from glamhpc.policy.t5_packing import attend, heads, packing, self_attention_bias

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "Candidates",
    "ScoreOutput",
    "cached_scores",
    "encode_candidates",
    "fast_scores",
    "lamorel_scores",
    "naive_scores",
    "packed_t5_scores",
    "pad_prompts",
    "policy_logits",
    "score_prompts",
]

ScoringMethod = Literal["fast", "packed", "cached", "lamorel", "naive"]
_IGNORE = -100


@dataclass(frozen=True)
class Candidates:
    """The K candidate actions, tokenised once (they are fixed for a policy).

    Attributes:
        ids: [K, T] action tokens followed by </s>, right-padded with the pad id to the longest.
        mask: [K, T] True on real tokens (including </s>), False on padding.
        texts: the candidate strings, in order.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    texts: tuple[str, ...]

    @property
    def num(self) -> int:
        return int(self.ids.shape[0])

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])

    def to(self, device: torch.device | str) -> Candidates:
        return Candidates(self.ids.to(device), self.mask.to(device), self.texts)


@dataclass(frozen=True)
class ScoreOutput:
    """Scores of every candidate for every prompt, and the value-head input.

    Attributes:
        scores: [B, K] float32, summed token log-probs of each candidate (EOS included).
        hidden: [B, d_model] float32, the last decoder layer's output (after the final layer norm)
            at decoder position 0; identical for every candidate, so one per prompt.
    """

    scores: torch.Tensor
    hidden: torch.Tensor


def encode_candidates(
    tokenizer: Any, texts: Sequence[str], pad_id: int | None = None
) -> Candidates:
    """Tokenise the candidate actions: each ends with exactly one </s>, padded to the longest."""
    if not texts:
        raise ValueError("at least one candidate action is needed")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if pad_id is None else pad_id
    if eos is None or pad is None:
        raise ValueError("the tokenizer needs an eos and a pad token")
    rows: list[list[int]] = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        # Some tokenizers append </s> themselves (T5), others do not: exactly one either way.
        while ids and ids[-1] == eos:
            ids.pop()
        if not ids:
            raise ValueError(f"candidate action {text!r} tokenises to nothing")
        rows.append([*ids, eos])
    width = max(len(r) for r in rows)
    ids_t = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for k, row in enumerate(rows):
        ids_t[k, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[k, : len(row)] = True
    return Candidates(ids_t, mask, tuple(texts))


def pad_prompts(
    prompt_ids: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad tokenised prompts -> (input_ids [B, L], attention_mask [B, L])."""
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for b, row in enumerate(prompt_ids):
        ids[b, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[b, : len(row)] = 1
    return ids.to(device), mask.to(device)


# ---------------------------------------------------------------------------------------------
# shared pieces


def _decoder_start(model: nn.Module) -> int:
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        raise ValueError("model.config.decoder_start_token_id is not set (see policy.models)")
    return int(start)


def _logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """LM-head logits in float32, with the model family's output conventions."""
    hf = cast("PreTrainedModel", model)
    if getattr(model.config, "scale_decoder_outputs", False):
        # Original T5 (tied embeddings) rescales the decoder output before the tied head.
        hidden = hidden * (hf.config.d_model**-0.5)
    logits = hf.get_output_embeddings()(hidden)
    bias = getattr(model, "final_logits_bias", None)  # BART-style models
    if isinstance(bias, torch.Tensor):
        logits = logits + bias.to(logits.dtype)
    # float32 before the log-softmax: a bf16 log-sum-exp over 32k entries loses ~2 digits.
    return logits.float()


def _token_logprobs(model: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log P(label) at every position ([N, T]); 0 where the label is ignored (padding)."""
    logits = _logits(model, hidden)
    n, t = labels.shape
    # cross_entropy fuses log-softmax and gather, and its backward (softmax - onehot) never
    # materialises a second [N*T, V] tensor.
    nll = F.cross_entropy(
        logits.reshape(n * t, -1), labels.reshape(n * t), ignore_index=_IGNORE, reduction="none"
    )
    return -nll.view(n, t)


def _shifted(cands: Candidates, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs `[start] + tokens[:-1]` and labels (padding -> ignore), both [K, T]."""
    inputs = torch.cat(
        [torch.full_like(cands.ids[:, :1], start), cands.ids[:, :-1]], dim=1
    )  # right padding stays at the end: with causal self-attention no real position sees it
    labels = cands.ids.masked_fill(~cands.mask, _IGNORE)
    return inputs, labels


# ---------------------------------------------------------------------------------------------
# the scorers


def naive_scores(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, cands: Candidates
) -> ScoreOutput:
    """Reference: one complete `model(...)` forward per (prompt, candidate) pair (B*K rows)."""
    b, k = input_ids.shape[0], cands.num
    dec_in, labels = _shifted(cands.to(input_ids.device), _decoder_start(model))
    out = model(
        input_ids=input_ids.repeat_interleave(k, dim=0),
        attention_mask=attention_mask.repeat_interleave(k, dim=0),
        decoder_input_ids=dec_in.repeat(b, 1),
        output_hidden_states=True,
        use_cache=False,
    )
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    lbl = labels.repeat(b, 1)
    tok = logp.gather(-1, lbl.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    scores = tok.masked_fill(lbl == _IGNORE, 0.0).sum(-1).view(b, k)
    # transformers 5 ends `decoder_hidden_states` with the decoder output AFTER the final layer
    # norm (the same tensor the LM head reads); the gradient tests pin this down.
    hidden = out.decoder_hidden_states[-1][:, 0]
    return ScoreOutput(scores, hidden.view(b, k, -1)[:, 0].float())


def lamorel_scores(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, cands: Candidates
) -> ScoreOutput:
    """Encoder once per prompt; encoder output repeated K times; full decoder on B*K rows."""
    b, k = input_ids.shape[0], cands.num
    dec_in, labels = _shifted(cands.to(input_ids.device), _decoder_start(model))
    hf = cast("PreTrainedModel", model)
    enc = hf.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    dec = hf.get_decoder()(
        input_ids=dec_in.repeat(b, 1),
        encoder_hidden_states=enc.repeat_interleave(k, dim=0),
        encoder_attention_mask=attention_mask.repeat_interleave(k, dim=0),
        use_cache=False,
    ).last_hidden_state
    scores = _token_logprobs(model, dec, labels.repeat(b, 1)).sum(-1).view(b, k)
    return ScoreOutput(scores, dec.view(b, k, *dec.shape[1:])[:, 0, 0].float())


def cached_scores(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, cands: Candidates
) -> ScoreOutput:
    """Encoder once, decoder step 0 once per prompt (cache on), then only the remaining tokens.

    Step 0 is the same for every candidate (its input is `decoder_start`), so it runs on B rows:
    it fills the self- and cross-attention caches, gives the log-probs of every candidate's first
    token and the value-head state. The cache is then repeated K times along the batch
    (`EncoderDecoderCache.batch_repeat_interleave`) and positions 1..T-1 are decoded for the B*K
    (prompt, candidate) rows. The cache length (1) tells T5 the query positions start at 1, which
    sets both the causal mask and the relative position bias of the decoder's self-attention.
    """
    b, k = input_ids.shape[0], cands.num
    cands = cands.to(input_ids.device)
    start = _decoder_start(model)
    hf = cast("PreTrainedModel", model)
    decoder = hf.get_decoder()
    enc = hf.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    step0 = decoder(
        input_ids=torch.full((b, 1), start, dtype=torch.long, device=input_ids.device),
        encoder_hidden_states=enc,
        encoder_attention_mask=attention_mask,
        use_cache=True,
    )
    h0 = step0.last_hidden_state  # [B, 1, d]
    first = torch.log_softmax(_logits(model, h0[:, 0]), dim=-1)  # [B, V]
    scores = first[:, cands.ids[:, 0]]  # [B, K]: every candidate has >= 1 token before </s>
    if cands.length > 1:
        cache = step0.cache
        cache.batch_repeat_interleave(k)
        # The cross-attention K/V are in the cache now; the decoder only reads the encoder
        # states' shape (for the padding mask), so a zero-stride view stands in for a K-fold copy
        # of them. Checked here because a cache that did not mark its cross-attention as filled
        # would silently recompute K/V from these zeros.
        if not all(cache.is_updated.values()):
            raise RuntimeError("decoder cache did not keep the cross-attention K/V after step 0")
        shape_only = enc.new_zeros(()).expand(b * k, *enc.shape[1:])
        inputs = cands.ids[:, :-1].repeat(b, 1)  # the tokens fed at positions 1..T-1
        labels = cands.ids[:, 1:].masked_fill(~cands.mask[:, 1:], _IGNORE).repeat(b, 1)
        rest = decoder(
            input_ids=inputs,
            encoder_hidden_states=shape_only,
            encoder_attention_mask=attention_mask.repeat_interleave(k, dim=0),
            cache=cache,
            use_cache=True,
        ).last_hidden_state
        scores = scores + _token_logprobs(model, rest, labels).sum(-1).view(b, k)
    return ScoreOutput(scores, h0[:, 0].float())


def packed_t5_scores(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, cands: Candidates
) -> ScoreOutput:
    """T5-only fast path: one decoder pass per prompt over all candidates, packed.

    Same arithmetic as `cached_scores`, arranged better for T5: the K candidates' tokens are packed
    along the sequence axis of ONE decoder row per prompt (with a block-causal self-attention
    mask and each token's real relative position), so the cross-attention K/V are computed once
    and used as they are: no K-fold copy, no step-0 pass, no candidate padding. Runs the model's
    own modules (layer norms, projections, feed-forward), so weights, dtypes and gradients are
    the model's. Dropout is not applied: `score_prompts` routes models with active dropout to
    `fast_scores`.
    """
    b = input_ids.shape[0]
    cands = cands.to(input_ids.device)
    hf = cast("PreTrainedModel", model)
    decoder = hf.get_decoder()
    pack = packing(cands, _decoder_start(model))
    enc = hf.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    hidden = decoder.embed_tokens(pack.inputs).unsqueeze(0).expand(b, -1, -1)
    dtype = hidden.dtype
    self_bias = self_attention_bias(decoder, pack, dtype)
    pad = (attention_mask == 0)[:, None, None, :]
    cross_bias = torch.zeros(pad.shape, dtype=dtype, device=pad.device).masked_fill(
        pad, torch.finfo(dtype).min
    )
    for block in decoder.block:
        sa, ca, ff = block.layer[0], block.layer[1], block.layer[-1]
        normed = sa.layer_norm(hidden)
        att = sa.SelfAttention
        keys, values = heads(att, att.k, normed), heads(att, att.v, normed)
        hidden = hidden + attend(att, normed, keys, values, self_bias)
        att = ca.EncDecAttention
        keys, values = heads(att, att.k, enc), heads(att, att.v, enc)
        hidden = hidden + attend(att, ca.layer_norm(hidden), keys, values, cross_bias)
        hidden = ff(hidden)
    hidden = decoder.final_layer_norm(hidden)
    logp = torch.log_softmax(_logits(model, hidden), dim=-1)  # [B, N, V]
    terms = logp[:, pack.term_pos, pack.term_tok]  # [B, M]
    scores = terms.new_zeros(b, cands.num).index_add(1, pack.term_cand, terms)
    return ScoreOutput(scores, hidden[:, 0].float())


def _packable(model: nn.Module) -> bool:
    """Whether `packed_t5_scores` reproduces the model exactly (T5 family, no active dropout)."""
    config = model.config
    if getattr(config, "model_type", None) not in {"t5", "mt5"}:
        return False
    # Dropout is the one thing the packed path does not reproduce (GlamPolicy zeroes it).
    if model.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        return False
    decoder = cast("PreTrainedModel", model).get_decoder()
    # FSDP2 shards parameters into DTensors and gathers them in each wrapped module's forward
    # hook; the packed path calls sub-modules of a block directly, bypassing the block's hook.
    if any(type(p).__name__ == "DTensor" for p in decoder.parameters()):
        return False
    first = decoder.block[0].layer[0].SelfAttention
    return getattr(first, "has_relative_attention_bias", False) and len(decoder.block[0].layer) == 3


def _checkpointed(model: nn.Module) -> bool:
    """Whether activation checkpointing wraps some of the model's blocks (by class name: policy
    code does not import torch.distributed, where the wrapper lives)."""
    return any(type(m).__name__ == "CheckpointWrapper" for m in model.modules())


def fast_scores(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, cands: Candidates
) -> ScoreOutput:
    """The fastest exact path for `model`: `packed_t5_scores` for T5, else `cached_scores`;
    `lamorel_scores` when gradients flow through checkpoint-wrapped blocks."""
    if _packable(model):
        return packed_t5_scores(model, input_ids, attention_mask, cands)
    if torch.is_grad_enabled() and _checkpointed(model):
        # Activation checkpointing re-runs a block's forward during backward; `cached_scores`
        # mutates its decoder cache in that forward, so the re-run would see the K/V twice
        # (found by `--smoke` on the FSDP2 + checkpointing XL config). No cache, no mutation.
        return lamorel_scores(model, input_ids, attention_mask, cands)
    return cached_scores(model, input_ids, attention_mask, cands)


_SCORERS: dict[str, Callable[..., ScoreOutput]] = {
    "fast": fast_scores,
    "packed": packed_t5_scores,
    "cached": cached_scores,
    "lamorel": lamorel_scores,
    "naive": naive_scores,
}


# ---------------------------------------------------------------------------------------------
# batching


def _chunks(
    lengths: Sequence[int], per_prompt: int, max_batch_tokens: int | None
) -> list[list[int]]:
    """Prompt indices grouped into chunks, shortest prompts first.

    Sorting by length keeps padding small; a chunk's cost is counted as
    `n_prompts * (longest prompt + K * candidate length)`, the token positions the encoder and the
    candidate decoder process. A single prompt over budget still forms its own chunk.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    if max_batch_tokens is None:
        return [order]
    chunks: list[list[int]] = []
    current: list[int] = []
    for i in order:
        cost = (len(current) + 1) * (lengths[i] + per_prompt)
        if current and cost > max_batch_tokens:
            chunks.append(current)
            current = []
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


def score_prompts(
    model: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    cands: Candidates,
    *,
    pad_id: int,
    method: ScoringMethod = "fast",
    max_batch_tokens: int | None = None,
) -> ScoreOutput:
    """Score every candidate for every tokenised prompt, chunked by `max_batch_tokens`.

    Results are in the order of `prompt_ids` and do not depend on the chunking (padding never
    reaches a real position). With gradients on, every chunk's graph is kept until backward, so
    the budget bounds the size of each forward, not the total activation memory.
    """
    if not prompt_ids:
        raise ValueError("no prompts to score")
    scorer = _SCORERS[method]
    device = next(model.parameters()).device
    cands = cands.to(device)
    chunks = _chunks([len(p) for p in prompt_ids], cands.num * cands.length, max_batch_tokens)
    outs: list[ScoreOutput] = []
    for chunk in chunks:
        ids, mask = pad_prompts([prompt_ids[i] for i in chunk], pad_id, device)
        outs.append(scorer(model, ids, mask, cands))
    order = torch.tensor([i for c in chunks for i in c], device=device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=device)
    scores = torch.cat([o.scores for o in outs])[inverse]
    hidden = torch.cat([o.hidden for o in outs])[inverse]
    return ScoreOutput(scores, hidden)


# ---------------------------------------------------------------------------------------------
# scores -> policy


def policy_logits(scores: torch.Tensor, mode: Literal["glam", "paper"] = "glam") -> torch.Tensor:
    """Candidate log-probabilities from scores ([..., K] -> [..., K], normalised over K).

    `glam`: log_softmax(s), the correct rule (lamorel's fixed scorer).
    `paper`: the paper-era rule softmax(P / max P) with P = exp(s) the sequence probabilities;
    P / max P is in (0, 1], so no action can get more than e / (e + K - 1) (0.35 with K = 6).
    Kept for parity runs only.
    """
    scores = scores.float()
    if mode == "glam":
        return torch.log_softmax(scores, dim=-1)
    if mode == "paper":
        # P / max P = exp(s - max s): computed in log space so tiny probabilities do not underflow.
        ratio = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
        return torch.log_softmax(ratio, dim=-1)
    raise ValueError(f"unknown scoring mode {mode!r}; expected 'glam' or 'paper'")


def max_paper_probability(num_candidates: int) -> float:
    """The cap of the paper-era rule: e / (e + K - 1)."""
    return math.e / (math.e + num_candidates - 1)
