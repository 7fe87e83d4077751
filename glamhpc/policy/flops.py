"""Model FLOPs for T5 scoring and an MFU estimate (nanoGPT style: from a formula, not a profiler).

A dense layer with P weights costs 2*P FLOPs per token forward; backward costs twice the forward.
Attention score/value products add 4 * d_attn * context FLOPs per token per attention layer.
Embedding lookups are free; the lm_head is a dense matmul over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

from glamhpc.policy.shapes import T5Shape

# Dense bf16 peak of common accelerators (TFLOP/s, no sparsity) for MFU.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "V100": 125.0}


def scoring_flops(
    shape: T5Shape, prompt_tokens: int, action_tokens: int, num_actions: int, prompts: int
) -> float:
    """Forward FLOPs of the shared-cache scoring of ``prompts`` prompts.

    Encoder once per prompt; decoder step 0 once per prompt; the remaining action tokens once per
    candidate. Cross-attention K/V projections are computed once per prompt.
    """
    d, attn = shape.d_model, shape.num_heads * shape.d_kv
    ff = (3 if shape.gated else 2) * d * shape.d_ff
    enc_layer = 2 * (4 * d * attn + ff) + 4 * attn * prompt_tokens
    encoder = prompts * prompt_tokens * shape.enc_layers * enc_layer
    cross_kv = prompts * prompt_tokens * shape.dec_layers * 2 * (2 * d * attn)
    dec_tokens = prompts * (1 + num_actions * max(action_tokens - 1, 0))
    dec_layer = 2 * (4 * d * attn + 2 * d * attn + ff) + 4 * attn * (prompt_tokens + action_tokens)
    decoder = dec_tokens * (shape.dec_layers * dec_layer + 2 * d * shape.vocab)
    return float(encoder + cross_kv + decoder)


def peak_flops(device_name: str | None) -> float | None:
    """Peak dense bf16 FLOP/s of a known accelerator, else None (MFU then not reported)."""
    if not device_name:
        return None
    for key, tflops in PEAK_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12
    return None


@dataclass(frozen=True)
class UpdateCost:
    """Model FLOPs of one PPO update and the rates derived from its wall time."""

    flops: float
    tokens: float

    def metrics(self, elapsed_s: float, peak_flops_total: float | None) -> dict[str, float]:
        out = {
            "tokens_per_s": self.tokens / elapsed_s,
            "model_tflops_per_s": self.flops / elapsed_s / 1e12,
        }
        if peak_flops_total:
            out["mfu"] = self.flops / elapsed_s / peak_flops_total
        return out


def update_cost(
    shape: T5Shape,
    *,
    prompt_tokens: float,
    action_tokens: float,
    num_actions: int,
    transitions: int,
    epochs: int,
) -> UpdateCost:
    """Acting scores every transition once; each PPO epoch re-scores it forward + backward (3x)."""
    fwd = scoring_flops(shape, int(prompt_tokens), round(action_tokens), num_actions, transitions)
    return UpdateCost(
        flops=fwd * (1 + 3 * epochs), tokens=transitions * prompt_tokens * (1 + epochs)
    )
