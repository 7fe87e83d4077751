"""Env steps/s: raw minigrid level vs the text env (descriptions + prompt) on the same episodes.

Both sides play MixedTrainLocal with the same reset seeds and the same pre-drawn action
sequence, so they do identical environment work; the text side additionally describes every
observation and builds the prompt the LLM would see (as a trainer does each step). Rounds
alternate raw/text so that machine noise hits both alike; each side's figure is the median over
rounds, and the ratio is the median of per-round ratios.

Also reported: EnvBatch (the trainer's path: 16 envs, auto-reset, prompts every step).

Usage: python benchmarks/env_throughput.py [--steps 4000] [--rounds 5]
Last line: ``RESULT text_over_raw=<time per text step / time per raw step>`` (target <= 1.5).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from glamhpc.envs.batch import EnvBatch
from glamhpc.envs.textenv import TextEnv, make_level

LEVEL = "BabyAI-MixedTrainLocal-v0"
NUM_ACTIONS = 6  # the standard space: candidate index == minigrid action id


def _actions(steps: int, seed: int) -> list[int]:
    return [int(a) for a in np.random.default_rng(seed).integers(0, NUM_ACTIONS, size=steps)]


def run_raw(actions: list[int], seed: int) -> float:
    """Seconds for the raw minigrid env to play ``actions`` (resetting with seed, seed+1, ...)."""
    env = make_level(LEVEL)
    episode = seed
    env.reset(seed=episode)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episode += 1
            env.reset(seed=episode)
    return time.perf_counter() - start


def run_text(actions: list[int], seed: int) -> float:
    """Same as ``run_raw`` through TextEnv, building the prompt after every step."""
    env = TextEnv(LEVEL)
    episode = seed
    env.reset(seed=episode)
    prompt_chars = len(env.prompt)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episode += 1
            env.reset(seed=episode)
        prompt_chars += len(env.prompt)
    elapsed = time.perf_counter() - start
    assert prompt_chars > 0
    return elapsed


def run_batch(actions: list[int], seed: int, num_envs: int = 16) -> float:
    """Seconds for EnvBatch to take ``len(actions)`` env steps in total, prompts every step."""
    batch = EnvBatch(LEVEL, num_envs=num_envs, seed=seed)
    rows = [actions[i : i + num_envs] for i in range(0, len(actions) - num_envs + 1, num_envs)]
    batch.prompts()
    start = time.perf_counter()
    for row in rows:
        batch.step(row)
        batch.prompts()
    return (time.perf_counter() - start) * len(actions) / (len(rows) * num_envs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="env steps per side per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    actions = _actions(args.steps, args.seed)
    run_raw(actions[:200], args.seed)  # warm caches (description tables, imports) off the clock
    run_text(actions[:200], args.seed)

    sides: dict[str, Callable[[list[int], int], float]] = {
        "raw": run_raw,
        "text": run_text,
        "batch": run_batch,
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, run in sides.items():
            times[name].append(run(actions, args.seed))
    ratios = [t / r for t, r in zip(times["text"], times["raw"], strict=True)]
    batch_ratios = [b / r for b, r in zip(times["batch"], times["raw"], strict=True)]

    print(f"level {LEVEL}, {args.steps} steps x {args.rounds} rounds (median)")
    for name in sides:
        print(f"  {name:>5}: {args.steps / statistics.median(times[name]):9.0f} env steps/s")
    print(f"  batch/raw time ratio: {statistics.median(batch_ratios):.3f}")
    ratio = statistics.median(ratios)
    print(f"  text/raw time ratio:  {ratio:.3f} (target <= 1.5)")
    print(f"RESULT text_over_raw={ratio:.3f}")


if __name__ == "__main__":
    main()
