"""Per-update time split (rollout, update compute, communication) for 1 vs 2 torchrun ranks.

Both runs use the same config and global batch, side by side in one invocation, on CPU with gloo.
Communication is the time inside collectives (DDP's gradient all-reduce via a timed comm hook,
metric reductions, signal agreement). On a 2-core machine two ranks share the cores, so this
reports the split; it sets no speed-up target.

    .venv/bin/python benchmarks/distributed.py [--updates 3] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BASE = [
    "env.level=BabyAI-GoToRedBallNoDists-v0",
    "env.num_envs=8",
    "env.history=1",
    "ppo.steps_per_env=16",
    "ppo.minibatch_size=32",
    "ppo.epochs=2",
    "train.progress=false",
    "train.threads=1",
    "tracking.enabled=false",
    "model.device=cpu",
]


def run(nproc: int, updates: int, root: Path, extra: list[str]) -> list[dict[str, float]]:
    name = f"bench-{nproc}"
    cmd = [sys.executable, "-m", "glamhpc", "train", "--run-name", name, "--nproc", str(nproc)]
    for item in [*BASE, f"train.run_root={root}", f"train.max_updates={updates}", *extra]:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=900)
    ckpt = root / "quickstart" / name / "checkpoints"
    latest = (ckpt / "latest").read_text().strip()
    return json.loads((ckpt / latest / "state.json").read_text())["history"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="glamhpc-dist-"))
    rows = {}
    for nproc in (1, 2):
        history = run(nproc, args.updates, root, args.overrides)[1:]  # first update warms up
        keys = ("time/rollout_s", "time/update_s", "time/comm_s", "env_steps_per_s")
        rows[nproc] = {k: sum(h[k] for h in history) / len(history) for k in keys}
    print(f"{'ranks':>5} {'rollout s':>10} {'update s':>9} {'comm s':>7} {'steps/s':>8}")
    for nproc, r in rows.items():
        update_compute = r["time/update_s"] - r["time/comm_s"]
        print(
            f"{nproc:>5} {r['time/rollout_s']:>10.2f} {update_compute:>9.2f} "
            f"{r['time/comm_s']:>7.2f} {r['env_steps_per_s']:>8.1f}"
        )
    two = rows[2]
    total = two["time/rollout_s"] + two["time/update_s"]
    ratio = rows[2]["env_steps_per_s"] / rows[1]["env_steps_per_s"]
    print(f"2 ranks vs 1: {ratio:.2f}x env steps/s (2 cores shared by both ranks)")
    print(f"RESULT comm_fraction_2ranks={two['time/comm_s'] / total:.3f}")


if __name__ == "__main__":
    main()
