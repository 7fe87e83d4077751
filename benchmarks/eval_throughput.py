"""Evaluation throughput: episodes/s of tiny-t5 with the fast scoring path vs the naive one.

Both paths play the same suite item with the same seeds through `glamhpc.evaluate.runner`
(`run_part`: EnvBatch, prompt building, scoring, sampling), so they do the same environment
work; only `GlamPolicy(method=...)` differs: ``fast`` (encoder once per prompt, decoder step 0
once, cache expanded over the K candidates) against ``naive`` (one full seq2seq forward per
prompt x candidate). The two give the same log-probabilities to ~1e-6, so they play the same
episodes (the script reports both episode counts and step totals to show it). Rounds alternate
fast/naive so machine noise hits both alike; each figure is the median over rounds.

Defaults: tiny-t5 (untrained: long episodes, the worst case for the tail), BabyAI-GoToLocal
(64-step limit), the paper's 3-observation prompts, 16 envs, 16 episodes, 2 rounds, CPU (the
naive path dominates the run time: several minutes on 2 busy cores).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_throughput.py [--episodes 16] [--rounds 2]

Last line: ``RESULT fast_vs_naive=<episodes/s fast / episodes/s naive>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from glamhpc.evaluate.agents import load_agent, model_spec
from glamhpc.evaluate.runner import EvalWork, PartTask, resolve_items, run_part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--level", default="BabyAI-GoToLocal-v0")
    parser.add_argument("--history", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = model_spec("tiny-t5", history=args.history, device=args.device)
    # One model in memory: both methods score with the same weights.
    loaded = load_agent(spec)
    work = EvalWork(
        tuple(resolve_items([], [args.level])), args.episodes, args.num_envs, seed=1, greedy=False
    )
    times: dict[str, list[float]] = {"fast": [], "naive": []}
    steps: dict[str, int] = {}
    for _ in range(args.rounds):
        for method in ("fast", "naive"):
            loaded.spec = replace(spec, method=method)
            start = time.perf_counter()
            out = run_part(PartTask(loaded.spec, work), loaded)
            times[method].append(time.perf_counter() - start)
            episodes = next(iter(out.values()))
            steps[method] = sum(e.length for e in episodes)

    print(
        f"tiny-t5, {args.level}, history {args.history}, {args.num_envs} envs, "
        f"{args.episodes} episodes, {args.rounds} rounds, device {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'method':<7} {'episodes/s':>11} {'steps/s':>9} {'median s':>9} {'env steps':>10}")
    rate = {}
    for method, seconds in times.items():
        median = statistics.median(seconds)
        rate[method] = args.episodes / median
        print(
            f"{method:<7} {rate[method]:>11.2f} {steps[method] / median:>9.0f} "
            f"{median:>9.2f} {steps[method]:>10d}"
        )
    print(f"RESULT fast_vs_naive={rate['fast'] / rate['naive']:.2f}")


if __name__ == "__main__":
    main()
