"""Benchmark the candidate-scoring paths side by side: naive vs lamorel-style vs fast.

Paths (glamhpc.policy.scoring): `naive` (one full forward per (prompt, action) pair),
`lamorel` (encoder once, encoder output repeated K times, full decoder on B*K rows), `cached`
(encoder once, decoder step 0 once per prompt with the cache, cache repeated K times with
`EncoderDecoderCache.batch_repeat_interleave`, remaining tokens decoded), `fast` (what the
policy uses; for T5 the packed path: all K candidates in one decoder row per prompt, shared
cross-attention K/V without copies).

Model: a RANDOM-INIT FLAN-T5-small-shaped T5 (`t5_config_for("google/flan-t5-small")`: 77.0 M
parameters, vocab 32128), CPU, eval mode (no dropout). No weights or tokenizer are downloaded:
the tiny-t5 tokenizer has ~700 ids, not 32128, so prompts and actions are random token ids in
the vocabulary range instead. Timing depends only on the shapes, and every path sees the same ids,
so the comparison is exact. Shapes follow GLAM_ALGORITHM.md: B=16 prompts of ~150 tokens (140-160,
so the batch has real padding), K=6 actions with the FLAN-T5 token lengths of the standard action
names (`turn left` -> 2 tokens, ..., `drop` -> 1; +</s>).

Each measurement is the median of `--repeats` runs after one warm-up; all variants run in the
same process, interleaved per repeat so drifting machine load hits them alike.

    .venv/bin/python benchmarks/scoring.py [--threads 2] [--repeats 7]

The last line is `RESULT fast_vs_naive=<x> fast_vs_lamorel=<y> max_abs_score_diff=<z>` (fp32,
no-grad medians; the diff is the largest |path - naive| over all paths and scores).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from glamhpc.policy.models import build_from_config, count_params, t5_config_for
from glamhpc.policy.scoring import Candidates, ScoreOutput, score_prompts

# FLAN-T5 (SentencePiece) token counts of the six standard actions, before </s>.
ACTION_TOKEN_LENGTHS = (2, 2, 2, 2, 1, 2)


def make_inputs(vocab: int, n_prompts: int, seed: int = 0) -> tuple[list[list[int]], Candidates]:
    """Random prompt ids (~150 tokens, ending in </s>) and 6 candidates of realistic lengths."""
    gen = torch.Generator().manual_seed(seed)
    prompts: list[list[int]] = []
    for _ in range(n_prompts):
        length = int(torch.randint(140, 161, (1,), generator=gen))
        body = torch.randint(3, vocab, (length - 1,), generator=gen).tolist()
        prompts.append([*body, 1])
    width = max(ACTION_TOKEN_LENGTHS) + 1
    ids = torch.zeros((len(ACTION_TOKEN_LENGTHS), width), dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for k, n in enumerate(ACTION_TOKEN_LENGTHS):
        ids[k, :n] = torch.randint(3, vocab, (n,), generator=gen)
        ids[k, n] = 1
        mask[k, : n + 1] = True
    texts = tuple(f"action{k}" for k in range(len(ACTION_TOKEN_LENGTHS)))
    return prompts, Candidates(ids, mask, texts)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass(frozen=True)
class Timing:
    median: float
    best: float


def bench(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, Timing]:
    """Seconds per variant (median and minimum); one warm-up each, then interleaved repeats."""
    for fn in variants.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            samples[name].append(timed(fn))
    return {name: Timing(statistics.median(s), min(s)) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--layers", type=int, default=None, help="override the layer count")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    overrides = {} if args.layers is None else {"num_layers": args.layers}
    config = t5_config_for("google/flan-t5-small", **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_from_config(config).eval()
    prompts, cands = make_inputs(config.vocab_size, args.prompts)
    lengths = [len(p) for p in prompts]
    print(
        f"model: random-init flan-t5-small shape, {count_params(model) / 1e6:.1f} M params, "
        f"{args.threads} threads; B={len(prompts)} prompts of {min(lengths)}-{max(lengths)} "
        f"tokens, K={cands.num} candidates of {sorted(set(ACTION_TOKEN_LENGTHS))}+1 tokens"
    )

    def run(method: str) -> ScoreOutput:
        return score_prompts(model, prompts, cands, pad_id=0, method=method)  # type: ignore[arg-type]

    def table(title: str, times: dict[str, Timing], base: str) -> None:
        print(f"\n{title}")
        head = f"x vs {base} (median)"
        print(f"  {'path':<8} {'median s':>9} {'min s':>8} {head:>22} {'(min)':>7}")
        for name, t in times.items():
            ratio, ratio_min = times[base].median / t.median, times[base].best / t.best
            print(f"  {name:<8} {t.median:>9.3f} {t.best:>8.3f} {ratio:>21.2f}x {ratio_min:>6.2f}x")

    methods = ("naive", "lamorel", "cached", "fast")
    with torch.no_grad():
        ref = {m: run(m) for m in methods}
        fp32 = bench({m: (lambda m=m: run(m)) for m in methods}, args.repeats)
    diff = max((ref[m].scores - ref["naive"].scores).abs().max().item() for m in methods)
    hidden_diff = (ref["fast"].hidden - ref["naive"].hidden).abs().max().item()
    table("fp32, no grad (acting)", fp32, "naive")
    print(f"  max |score - naive| = {diff:.2e}, max |hidden - naive| = {hidden_diff:.2e}")

    model_bf16 = build_from_config(config).eval()
    model_bf16.load_state_dict(model.state_dict())
    model_bf16.to(torch.bfloat16)

    def run_bf16(method: str) -> ScoreOutput:
        return score_prompts(model_bf16, prompts, cands, pad_id=0, method=method)  # type: ignore[arg-type]

    with torch.no_grad():
        ref16 = run_bf16("fast")
        bf16 = bench({m: (lambda m=m: run_bf16(m)) for m in methods}, args.repeats)
    same_best = bool((ref16.scores.argmax(-1) == ref["naive"].scores.argmax(-1)).all())
    bf16_diff = (ref16.scores - ref["naive"].scores).abs().max().item()
    table("bf16, no grad (acting)", bf16, "naive")
    print(
        f"  bf16 fast vs fp32 naive: max |diff| = {bf16_diff:.3f}, best action unchanged: "
        f"{same_best}; bf16 fast is {fp32['fast'].median / bf16['fast'].median:.2f}x fp32 fast"
    )

    weights = torch.randn(len(prompts), cands.num, generator=torch.Generator().manual_seed(1))

    def train_step(method: str) -> None:
        model.zero_grad(set_to_none=True)
        out = run(method)
        loss = (out.scores * weights).sum() + out.hidden.square().mean()
        loss.backward()

    grad_methods = ("lamorel", "cached", "fast")
    grad = bench({m: (lambda m=m: train_step(m)) for m in grad_methods}, args.repeats)
    table("fp32, forward + backward (PPO update)", grad, "lamorel")

    ratio_naive = fp32["naive"].median / fp32["fast"].median
    ratio_lamorel = fp32["lamorel"].median / fp32["fast"].median
    print(
        f"\nminimum-based (least disturbed samples): "
        f"fast_vs_naive={fp32['naive'].best / fp32['fast'].best:.2f} "
        f"fast_vs_lamorel={fp32['lamorel'].best / fp32['fast'].best:.2f} "
        f"update_fast_vs_lamorel={grad['lamorel'].best / grad['fast'].best:.2f}"
    )
    print(
        f"RESULT fast_vs_naive={ratio_naive:.2f} fast_vs_lamorel={ratio_lamorel:.2f} "
        f"max_abs_score_diff={diff:.2e}"
    )


if __name__ == "__main__":
    main()
