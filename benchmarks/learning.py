"""Does the quickstart learn, and does it learn to READ the observation?

Trains configs/quickstart.yaml (tiny-t5, CPU), then evaluates three policies on the same test seeds
(1e9-based, disjoint from training), sampling actions as the paper does:
  trained  - the trained policy;
  random   - uniform over the candidate actions;
  blind    - the trained policy shown another env's prompt (observations shuffled between envs):
             an observation-blind action mix, the control that separates grounding from a prior.
Targets (issue 3): trained >= 0.8, >= 2x random, >= blind + 0.2, within 10 minutes on 2 cores.
Writes the learning curve to benchmarks/out/learning_curve.png (and .csv).

    .venv/bin/python benchmarks/learning.py [--episodes 300] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from glamhpc.config import load_config
from glamhpc.envs.batch import EnvBatch
from glamhpc.evaluate.episodes import (
    TEST_SEED_BASE,
    run_episodes,
    shuffle_between_envs,
    uniform_policy,
)
from glamhpc.rl.trainer import Trainer

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--episodes", type=int, default=300)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="glamhpc-learning-"))
    cfg = load_config(
        args.config,
        [
            f"train.run_root={workdir / 'runs'}",
            f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
            "tracking.log_model=false",
            *args.overrides,
        ],
    )
    from glamhpc.distributed import init_distributed

    start = time.perf_counter()
    trainer = Trainer(cfg, "learning", init_distributed(cfg.dist, cfg.model.device))
    trainer.run()
    train_s = time.perf_counter() - start

    policy = trainer.policy

    @torch.no_grad()
    def trained(prompts: list[str]) -> torch.Tensor:
        return policy(prompts)[0]

    def make_envs(n: int) -> EnvBatch:
        return EnvBatch(
            level=cfg.env.level,
            num_envs=n,
            seed=TEST_SEED_BASE + cfg.seed,
            action_space=cfg.env.action_space,
            history=cfg.env.history,
            reward_scale=cfg.env.reward_scale,
            language=cfg.env.language,
        )

    k = len(trainer.envs.action_texts)
    results = {}
    for name, fn, transform in (
        ("trained", trained, None),
        ("random", uniform_policy(k), None),
        ("blind", trained, shuffle_between_envs),
    ):
        res = run_episodes(
            fn, make_envs, args.episodes, 16, seed=cfg.seed, prompt_transform=transform
        )
        results[name] = res

    OUT.mkdir(exist_ok=True)
    curve = [(h["frames"], h["success_rate"]) for h in trainer.history if "success_rate" in h]
    with open(OUT / "learning_curve.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["frames", "success_rate"])
        writer.writerows(curve)
    _plot(curve, results, OUT / "learning_curve.png", cfg.env.level)

    print(
        f"level {cfg.env.level}, {trainer.counters.frames} frames in {train_s:.0f} s "
        f"({trainer.counters.frames / train_s:.0f} frames/s incl. updates)"
    )
    print("frames   success (training rollouts)")
    for frames, success in curve[:: max(1, len(curve) // 12)]:
        print(f"{frames:>7d}  {success:.2f}")
    print(f"{'policy':<8} {'episodes':>8} {'success':>8} {'mean len':>9}")
    for name, res in results.items():
        mean_len = sum(res.lengths) / max(res.n, 1)
        print(f"{name:<8} {res.n:>8d} {res.success_rate():>8.3f} {mean_len:>9.1f}")
    t, r, b = (results[n].success_rate() for n in ("trained", "random", "blind"))
    ok = t >= 0.8 and t >= 2 * r and t >= b + 0.2 and train_s <= 600
    print(f"targets (>=0.8, >=2x random, >=blind+0.2, <=600 s): {'met' if ok else 'NOT met'}")
    print(f"RESULT trained_success={t:.3f} random_success={r:.3f} blind_success={b:.3f}")


def _plot(curve, results, path: Path, level: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if curve:
        xs, ys = zip(*curve, strict=True)
        ax.plot(xs, ys, label="training rollouts", color="tab:blue")
    colors = {"trained": "tab:green", "random": "tab:gray", "blind": "tab:red"}
    for name, res in results.items():
        ax.axhline(res.success_rate(), ls="--", color=colors[name], label=f"eval: {name}")
    ax.set_xlabel("environment frames")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"glamhpc quickstart: tiny-t5 on {level}")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
