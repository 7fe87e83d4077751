"""GLAM against the paper's baselines on the quickstart task, the same budget and the same test.

Every learning agent trains its quickstart config (GoToRedBallNoDists, the quickstart's frame
budget) with `glamhpc train`, exactly as a user would run it, then `glamhpc eval` plays the same
300 test episodes (test seeds 1e9-based, disjoint from training; actions sampled as the paper
does) for each of them and for the random baseline. Prints one row per agent (success rate and
its Wilson 95% interval, training and evaluation wall time) and, last:

    RESULT glam_success=F npae_success=F drrn_success=F symbolic_success=F bc_success=F
    random_success=F

(on one line). bc clones the BabyAI bot's demonstrations. Targets (issue 13): every learning
baseline above random, BC >= 0.9.

    .venv/bin/python benchmarks/baselines.py [--agents glam,bc] [--episodes 300]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from glamhpc.config import load_config
from glamhpc.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
LEVEL = "BabyAI-GoToRedBallNoDists-v0"

#: Agent name -> its quickstart config (all on the quickstart's level and frame budget).
AGENTS: dict[str, str] = {
    "glam": "configs/quickstart.yaml",
    "npae": "configs/baselines/npae-quickstart.yaml",
    "drrn": "configs/baselines/drrn-quickstart.yaml",
    "symbolic": "configs/baselines/symbolic-quickstart.yaml",
    "bc": "configs/baselines/bc-quickstart.yaml",
}


@dataclass(frozen=True)
class Row:
    agent: str
    episodes: int
    success: float
    low: float
    high: float
    train_s: float
    eval_s: float


def glamhpc(*args: str, log: Path) -> float:
    """Run the CLI as a user would; returns its wall time. Output goes to ``log``."""
    start = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(
            [sys.executable, "-m", "glamhpc", *args], stdout=fh, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"glamhpc {' '.join(args[:2])} failed ({done.returncode}):\n{tail}")
    return time.perf_counter() - start


def read_result(out: Path, agent: str, episodes: int, train_s: float, eval_s: float) -> Row:
    # `glamhpc eval --out DIR` writes into DIR/<level>-seed<N>/.
    (path,) = out.glob("*/results.csv")
    with path.open() as fh:
        (row,) = list(csv.DictReader(fh))
    return Row(
        agent,
        int(row["episodes"]),
        float(row["success_rate"]),
        float(row["ci95_low"]),
        float(row["ci95_high"]),
        train_s,
        eval_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default=",".join(AGENTS), help="comma-separated subset")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    names = [n.strip() for n in args.agents.split(",") if n.strip()]
    unknown = sorted(set(names) - set(AGENTS))
    if unknown:
        raise SystemExit(f"unknown agent(s) {unknown}; choose from {sorted(AGENTS)}")

    os.chdir(REPO)
    work = Path(tempfile.mkdtemp(prefix="glamhpc-baselines-"))
    common = [
        f"train.run_root={work / 'runs'}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        "tracking.log_model=false",
        "model.device=cpu",
        *args.overrides,
    ]
    evaluation = ["--level", LEVEL, "-e", str(args.episodes), "--no-track", "--device", "cpu"]
    rows: list[Row] = []
    for name in names:
        config = AGENTS[name]
        sets = [x for s in common for x in ("--set", s)]
        print(f"[{name}] training {config} ...", flush=True)
        train_s = glamhpc("train", config, *sets, "--run-name", name, log=work / f"{name}.log")
        run_dir = RunDir.of(load_config(config, common), name).path
        out = work / "eval" / name
        print(f"[{name}] trained in {train_s:.0f} s; evaluating ...", flush=True)
        eval_s = glamhpc(
            "eval", "--checkpoint", str(run_dir), *evaluation, "--out", str(out),
            log=work / f"{name}-eval.log",
        )  # fmt: skip
        rows.append(read_result(out, name, args.episodes, train_s, eval_s))
    out = work / "eval" / "random"
    eval_s = glamhpc(
        "eval", "--baseline", "random", *evaluation, "--out", str(out), log=work / "random.log"
    )
    rows.append(read_result(out, "random", args.episodes, 0.0, eval_s))

    print(f"\n{LEVEL}, {args.episodes} test episodes each (work folder {work})")
    print(
        f"{'agent':<9} {'episodes':>8} {'success':>8} {'95% interval':>15} {'train':>8} {'eval':>6}"
    )
    for r in rows:
        interval = f"[{r.low:.3f}, {r.high:.3f}]"
        train = f"{r.train_s:.0f} s" if r.train_s else "-"
        print(
            f"{r.agent:<9} {r.episodes:>8d} {r.success:>8.3f} {interval:>15} {train:>8} "
            f"{r.eval_s:>4.0f} s"
        )
    by_name = {r.agent: r.success for r in rows}
    random_success = by_name["random"]
    learners = [r for r in rows if r.agent != "random"]
    ok = all(r.success > random_success for r in learners) and by_name.get("bc", 1.0) >= 0.9
    print(f"targets (every learner above random, bc >= 0.9): {'met' if ok else 'NOT met'}")
    fields = [f"{name}_success" for name in AGENTS] + ["random_success"]
    values = {f"{r.agent}_success": f"{r.success:.3f}" for r in rows}
    print("RESULT " + " ".join(f"{k}={values.get(k, 'nan')}" for k in fields))


if __name__ == "__main__":
    main()
