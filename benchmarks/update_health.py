"""Cost of update health: PPO update time with and without the health measurement.

Side by side in one process, per model shape: the same PPO update (`rl.ppo.ppo_update` on real
BabyAI-Text prompts, GlamPolicy scoring, Adam) is timed alternately with and without
`rl.health.UpdateHealth` (snapshot before, measure after), so drift on a shared machine hits
both sides alike. Shapes: `tiny` (tiny-t5, the quickstart model), and random T5s of
flan-t5-small's (`small`) and flan-t5-large's (`large`) shapes with tiny-t5's tokenizer (the
table prints their trainable parameter counts). The default batch is the quickstart's update:
512 transitions, 4 epochs of minibatches of 128 (16 Adam steps).

    .venv/bin/python benchmarks/update_health.py [--shapes tiny,small] [--device cpu|cuda]
        [--repeats 5] [--transitions 512] [--epochs 4] [--minibatch-size 128]

Measured (2 shared CPU cores, a CI run beside it): tiny, quickstart batch: health 7.7 ms = 0.04 %
of a 17.6 s update; small (62M), 64 transitions x 1 epoch: 0.55 s = 0.75 % of a 73 s update. The
with/without ratios (1.15 and 0.99) were within the machine's noise.

Per shape: median update seconds without / with health, their ratio, and the median time of
the health measurement alone as a percentage of an update (the steadier figure: the ratio's
noise on a busy machine is larger than the cost). Last line per shape:
``RESULT shape=<s> ratio=<with/without> health_pct=<x>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, cast

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from torch import nn

from glamhpc.config import PPOConfig
from glamhpc.envs.batch import EnvBatch
from glamhpc.policy.glam import GlamPolicy
from glamhpc.policy.models import load_model
from glamhpc.rl.health import UpdateHealth
from glamhpc.rl.ppo import RolloutBatch, minibatch_schedule, ppo_update

_FLAN: dict[str, Any] = {"d_kv": 64, "feed_forward_proj": "gated-gelu", "vocab_size": 32128}
#: Random-weight T5s of flan-t5-small's and flan-t5-large's shapes (no download needed).
SHAPES: dict[str, dict[str, Any]] = {
    "small": {**_FLAN, "d_model": 512, "d_ff": 1024, "num_heads": 6, "num_layers": 8},
    "large": {**_FLAN, "d_model": 1024, "d_ff": 2816, "num_heads": 16, "num_layers": 24},
}


def build(shape: str, device: str, transitions: int) -> tuple[GlamPolicy, list[str]]:
    model, tokenizer = load_model("tiny-t5", device=device)
    if shape != "tiny":
        from transformers import T5Config, T5ForConditionalGeneration

        torch.manual_seed(0)
        config = T5Config(  # type: ignore[call-arg]
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
            tie_word_embeddings=False,
            **SHAPES[shape],
        )
        model = cast(nn.Module, T5ForConditionalGeneration(config)).to(device).eval()
    envs = EnvBatch("BabyAI-GoToRedBallNoDists-v0", num_envs=8, seed=0, history=2)
    policy = GlamPolicy(model, tokenizer, envs.action_texts).to(device)
    policy.eval()
    prompts: list[str] = []
    while len(prompts) < transitions:
        prompts += envs.prompts()
        envs.step([0] * 8)
    return policy, prompts


def rollout(policy: GlamPolicy, prompts: list[str], n: int) -> RolloutBatch:
    with torch.no_grad():
        logp, values = policy(prompts[:n])
    actions = torch.multinomial(logp.float().exp().cpu(), 1).squeeze(1)
    return RolloutBatch(
        prompts=prompts[:n],
        actions=actions,
        logprobs=logp.float().cpu().gather(1, actions[:, None]).squeeze(1),
        values=values.float().cpu(),
        advantages=torch.randn(n),
        returns=torch.randn(n),
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(
    shape: str, device: str, repeats: int, transitions: int, epochs: int, minibatch_size: int
) -> dict[str, float]:
    policy, prompts = build(shape, device, transitions)
    named = list(policy.named_parameters())
    params = [p for _, p in named]
    optimizer = torch.optim.Adam(params, lr=1e-5)
    cfg = PPOConfig(epochs=epochs, minibatch_size=minibatch_size)
    batch = rollout(policy, prompts, transitions)
    schedule = minibatch_schedule(1, transitions, 0, transitions, minibatch_size, epochs, 0, 0)
    health = UpdateHealth(named)

    def score(p: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        logp, values = policy(p)
        return logp.float().cpu(), values.float().cpu()

    def update(with_health: bool) -> tuple[float, float]:
        _sync(device)
        start = time.perf_counter()
        cost = 0.0
        if with_health:
            health.snapshot()
            _sync(device)
            cost += time.perf_counter() - start
        ppo_update(score, params, optimizer, batch, schedule, cfg, device=device)
        if with_health:
            _sync(device)
            t0 = time.perf_counter()
            health.measure()
            cost += time.perf_counter() - t0
        _sync(device)
        return time.perf_counter() - start, cost

    update(True)  # warm-up: allocations, the snapshot buffers, Adam's state
    update(False)
    plain: list[float] = []
    monitored: list[float] = []
    costs: list[float] = []
    for i in range(repeats):
        for with_health in (i % 2 == 0, i % 2 == 1):  # alternate which side goes first
            seconds, cost = update(with_health)
            if with_health:
                monitored.append(seconds)
                costs.append(cost)
            else:
                plain.append(seconds)
    base = statistics.median(plain)
    return {
        "params_m": sum(p.numel() for p in params) / 1e6,
        "without_s": base,
        "with_s": statistics.median(monitored),
        "ratio": statistics.median(monitored) / base,
        "health_ms": statistics.median(costs) * 1e3,
        "health_pct": statistics.median(costs) / base * 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--transitions", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--minibatch-size", type=int, default=128)
    args = parser.parse_args()
    print(
        f"device {args.device}: {args.transitions} transitions, {args.epochs} epochs of "
        f"minibatches of {args.minibatch_size}"
    )
    print(f"{'shape':>6} {'params M':>9} {'without s':>10} {'with s':>8} {'ratio':>6} "
          f"{'health ms':>10} {'health %':>9}")  # fmt: skip
    results = []
    for shape in args.shapes.split(","):
        r = measure(
            shape, args.device, args.repeats, args.transitions, args.epochs, args.minibatch_size
        )
        results.append((shape, r))
        print(
            f"{shape:>6} {r['params_m']:>9.1f} {r['without_s']:>10.3f} {r['with_s']:>8.3f} "
            f"{r['ratio']:>6.3f} {r['health_ms']:>10.2f} {r['health_pct']:>9.2f}",
            flush=True,
        )
    for shape, r in results:
        print(f"RESULT shape={shape} ratio={r['ratio']:.3f} health_pct={r['health_pct']:.2f}")


if __name__ == "__main__":
    main()
