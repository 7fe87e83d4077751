"""Launcher overhead on a real Slurm cluster: `glamhpc submit` vs a bare `sbatch --wrap`.

For each repetition (interleaved, so both see the same machine load), the time from starting the
command to the run's first training step (the trainer's first metrics record, timestamped when
update 1 finished):

- glamhpc: `glamhpc submit CONFIG --set ... --executor slurm` (CLI start-up, config snapshot,
  submitit pickling, sbatch, then on the node submitit's task and the torchrun agent);
- sbatch:  `sbatch --wrap "python -m glamhpc train SNAPSHOT --run-name R"` (the same training
  command, started directly).

Then the wall time of `glamhpc sweep` for a 16-element sweep (parent MLflow run, 16 config
snapshots, one array, the finalizer); the sweep is cancelled right after.

Needs a cluster: `sudo glamhpc cluster up --nodes 2`. Last line:
`RESULT submit_over_sbatch=<ratio> sweep16_submit_s=<seconds>`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from glamhpc.config import load_config
from glamhpc.rundir import RunDir
from glamhpc.tracking import JOURNAL

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "submit_latency"
CONFIG = REPO / "configs" / "quickstart.yaml"
TINY = [
    "env.num_envs=2",
    "ppo.steps_per_env=4",
    "ppo.minibatch_size=8",
    "train.progress=false",
    "train.max_updates=2",
    "model.device=cpu",
]


def glamhpc(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glamhpc", *args],
        cwd=OUT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def first_step_time(run_dir: Path, started: float, timeout_s: float = 300) -> float:
    """Epoch seconds of the first training step (the journal's first record)."""
    journal = run_dir / JOURNAL
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if journal.is_file():
            line = journal.read_text().split("\n", 1)[0].strip()
            if line:
                record = json.loads(line)
                # The tracker stamps records in milliseconds; fall back to "seen now".
                return float(record["t"]) / 1000 if "t" in record else time.time()
        time.sleep(0.05)
    raise TimeoutError(f"no training step in {run_dir} after {timeout_s:.0f}s")


def overrides(uri: str) -> list[str]:
    return [*TINY, f"tracking.uri={uri}"]


def run_dir_of(name: str, uri: str) -> Path:
    """Where the run named ``name`` writes, for commands started in OUT (glamhpc.rundir)."""
    return RunDir.of(load_config(str(CONFIG), overrides(uri)), name, OUT).path


def time_glamhpc(index: int, uri: str, env: dict[str, str]) -> float:
    name = f"glamhpc-{index}"
    sets = [a for o in overrides(uri) for a in ("--set", o)]
    started = time.time()
    out = glamhpc("submit", str(CONFIG), *sets, "--executor", "slurm", "--run-name", name, env=env)
    job_id = out.stdout.split()[2]
    step = first_step_time(run_dir_of(name, uri), started)
    subprocess.run(["scancel", job_id], check=False)
    return step - started


def time_sbatch(index: int, uri: str, env: dict[str, str]) -> float:
    name = f"sbatch-{index}"
    # The same resolved config the launcher would write, prepared before the clock starts.
    snapshot = OUT / f"{name}.yaml"
    config = glamhpc(
        "config", str(CONFIG), *[a for o in overrides(uri) for a in ("--set", o)], env=env
    )
    snapshot.write_text(config.stdout)
    command = shlex.join(
        [sys.executable, "-m", "glamhpc", "train", str(snapshot), "--run-name", name]
    )
    started = time.time()
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--job-name=glamhpc:{name}",
            f"--chdir={OUT}",
            f"--output={OUT}/{name}.out",
            "--wrap",
            command,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    job_id = out.stdout.strip().split(";")[0]
    step = first_step_time(run_dir_of(name, uri), started)
    subprocess.run(["scancel", job_id], check=False)
    return step - started


def time_sweep16(index: int, uri: str, env: dict[str, str]) -> float:
    name = f"sweep16-{index}"
    sweep = OUT / f"{name}.yaml"
    sweep.write_text(
        f"name: {name}\nbase: {CONFIG}\nset: {overrides(uri)!r}\n"
        "grid:\n  ppo.lr: [1.0e-4, 2.0e-4, 3.0e-4, 4.0e-4]\nseeds: [1, 2, 3, 4]\n"
    )
    started = time.monotonic()
    glamhpc("sweep", str(sweep), "--executor", "slurm", env=env)
    elapsed = time.monotonic() - started
    glamhpc("cancel", name, env=env)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Repetitions of each measurement.")
    args = parser.parse_args()
    if shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        sys.exit("no Slurm cluster answers: start one with `sudo glamhpc cluster up --nodes 2`")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    env = {**os.environ, "GLAMHPC_STATE_DIR": str(OUT / "state")}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{OUT / 'mlflow.db'}"
    # Create the tracking store first: its one-off migrations are not part of either path.
    from mlflow import MlflowClient

    MlflowClient(uri).search_experiments()

    submit_s, sbatch_s, sweep_s = [], [], []
    for i in range(args.repeats):
        submit_s.append(time_glamhpc(i, uri, env))
        sbatch_s.append(time_sbatch(i, uri, env))
        sweep_s.append(time_sweep16(i, uri, env))
        print(
            f"[{i}] submit->first step: glamhpc {submit_s[-1]:.2f}s, sbatch --wrap "
            f"{sbatch_s[-1]:.2f}s; 16-element sweep submit {sweep_s[-1]:.2f}s",
            flush=True,
        )
    glamhpc_med, sbatch_med = statistics.median(submit_s), statistics.median(sbatch_s)
    sweep_med = statistics.median(sweep_s)
    print(f"median submit->first step: glamhpc {glamhpc_med:.2f}s, sbatch {sbatch_med:.2f}s")
    print(f"median 16-element sweep submit: {sweep_med:.2f}s")
    print(
        f"RESULT submit_over_sbatch={glamhpc_med / sbatch_med:.2f} sweep16_submit_s={sweep_med:.2f}"
    )


if __name__ == "__main__":
    main()
