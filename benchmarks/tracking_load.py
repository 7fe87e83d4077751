"""Tracking at sweep scale: N concurrent runs logging into one real `glamhpc tracking-server`.

Each writer is a separate PROCESS that does what rank 0 of `glamhpc train` does with its
``Tracker``: ``Tracker.start`` with the resolved quickstart config (its params) and the
trainer's tags, then one ``log_metrics`` per update with the trainer's exact metric set
(``TRAINER_METRICS``: rl/metrics.py, rollout.EpisodeStats, flops, distributed.memory,
rl/health, PPO statistics; 37 keys on CPU), a ``checkpoint.latest`` tag every
``train.checkpoint_every`` updates, the learning-curve artifact and ``finish``. Updates come
every 0.2-1 s (uniform), all writers start logging at the same moment. Writers are forked from
one parent that imported MLflow once (copy-on-write): a fresh interpreter per writer costs
~150 MB and seconds of CPU each, which on 2 cores would measure the import, not the tracking.

Optionally (``--kill-at S``) the server's whole process group is SIGKILLed S seconds into the
run and started again ``--down-s`` (20) seconds later on the same port and store.

Measured:
* ``delivered_at_end_frac``: points on the server ``--settle-s`` (30) seconds after the last
  update of the last writer, over points logged (from each run's latest step per key, one
  ``search_runs``; exact because a run's points are delivered in order, and gaps are caught by
  the full check below);
* ``lost`` / ``duplicated``: after every writer exited, each key's full history of each run
  through the MLflow client, compared point by point with what the writer logged;
* ``p99_block_ms``: 99th percentile of the wall time a writer's training thread spent inside
  ``log_metrics`` / ``set_tags`` (what training waits for).

    .venv/bin/python benchmarks/tracking_load.py --writers 64 --backend sqlite --duration 60
    .venv/bin/python benchmarks/tracking_load.py --writers 64 --kill-at 25

Last line: ``RESULT writers=N backend=B delivered_at_end_frac=F lost=N duplicated=N
p99_block_ms=F``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
# MLflow's usage telemetry (it cannot reach its endpoint here anyway) resets a process-global
# environment variable in forked children, which fails their first request.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "tracking-load"

#: What `glamhpc train` logs per update on CPU (read from a quickstart run's journal): the
#: episode statistics, throughput and FLOPs, the time split, PPO statistics, update health per
#: parameter group, held memory, lr and the update counter.
TRAINER_METRICS = (
    "episodes", "success_rate", "return_mean", "episode_length_mean",
    "env_steps_per_s", "tokens_per_s", "model_tflops_per_s",
    "time/rollout_s", "time/update_s", "time/comm_s", "prompt_tokens_mean",
    "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm",
    "gradient_steps", "value_mean", "advantage_mean", "return_target_mean",
    "health/encoder/rel_update", "health/encoder/changed_frac",
    "health/decoder/rel_update", "health/decoder/changed_frac",
    "health/embeddings/rel_update", "health/embeddings/changed_frac",
    "health/value_head/rel_update", "health/value_head/changed_frac",
    "health/llm/rel_update", "health/llm/changed_frac",
    "memory/weights_gb", "memory/grads_gb", "memory/optimizer_gb", "memory/health_gb",
    "lr", "update",
)  # fmt: skip
FRAMES_PER_UPDATE = 512  # quickstart: 16 envs x 32 steps


def value(writer: int, key_index: int, update: int) -> float:
    """The value writer ``writer`` logs for key ``key_index`` at ``update`` (checked at the end)."""
    return float(writer * 1000 + key_index + update / 1000)


# ----------------------------------------------------------------------------- the server


class Server:
    """`glamhpc tracking-server` in the foreground, in its own process group (kill -9 = a crash)."""

    def __init__(self, backend: str, data: Path, port: int, writers: int, workers: int | None):
        self.cmd = [
            sys.executable, "-m", "glamhpc", "tracking-server", "--backend", backend,
            "--data", str(data), "--port", str(port), "--writers", str(writers),
        ]  # fmt: skip
        if workers:
            self.cmd += ["--workers", str(workers)]
        self.uri = f"http://127.0.0.1:{port}"
        self.log = data / "server-console.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 240.0) -> float:
        import requests

        t0 = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-600:]
                raise SystemExit(f"tracking-server exited ({self.proc.returncode}): {tail}")
            try:
                if requests.get(self.uri + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise SystemExit(f"tracking-server did not answer within {timeout_s:g} s ({self.log})")

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL everything the server runs, like a crashed node: the command starts MLflow
        (and PostgreSQL) in process groups of their own, so each group is killed."""
        import psutil

        if self.proc is None:
            return
        try:
            tree = [psutil.Process(self.proc.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        groups = set()
        for proc in tree:
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                groups.add(os.getpgid(proc.pid))
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.proc.wait()
        psutil.wait_procs(tree, timeout=10)

    def stop(self) -> None:
        self.signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


# ----------------------------------------------------------------------------- one writer


def writer_main(
    index: int, args: dict[str, Any], config: dict[str, Any], go: Any, out: str
) -> None:
    """One training run's rank 0, minus the training: Tracker calls at the trainer's pace."""
    import socket

    from glamhpc.tracking import Tracker

    rng = random.Random(index)
    run_dir = Path(args["root"]) / "runs" / EXPERIMENT / f"w{index:03d}"
    tags = {
        "model": config["model"]["name"],
        "level": config["env"]["level"],
        "seed": str(config["seed"]),
        "run_dir": str(run_dir),
        "checkpoints": str(run_dir / "checkpoints"),
        "world_size": "1",
        "hosts": socket.gethostname(),
    }
    tracker = Tracker.start(run_dir, config, EXPERIMENT, args["uri"], run_dir.name, tags)
    go.wait()
    blocks: list[float] = []
    logged = 0
    end = float(args["t_end"])
    checkpoint_every = int(config["train"]["checkpoint_every"])
    update = 0
    while time.time() < end:
        time.sleep(rng.uniform(args["pace_min"], args["pace_max"]))
        update += 1
        metrics = {k: value(index, i, update) for i, k in enumerate(TRAINER_METRICS)}
        t0 = time.perf_counter()
        tracker.log_metrics(metrics, step=update * FRAMES_PER_UPDATE)
        blocks.append(time.perf_counter() - t0)
        logged += len(metrics)
        if update % checkpoint_every == 0:
            t0 = time.perf_counter()
            tracker.set_tags({"checkpoint.latest": str(run_dir / "checkpoints" / f"u{update:07d}")})
            blocks.append(time.perf_counter() - t0)
    last_update = time.time()
    tracker.log_learning_curve("success_rate")
    delivered = tracker.finish("FINISHED", timeout_s=args["finish_timeout_s"])
    Path(out).write_text(
        json.dumps(
            {
                "run_id": tracker.run_id,
                "updates": update,
                "points": logged,
                "blocks": blocks,
                "last_update": last_update,
                "finish_delivered": delivered,
            }
        )
    )


# ----------------------------------------------------------------------------- checks


def latest_updates(uri: str) -> dict[tuple[str, str], int]:
    """(run id, key) -> the latest update the server has, for every run of the experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    out: dict[tuple[str, str], int] = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        for metric in run.to_proto().data.metrics:
            out[(run.info.run_id, metric.key)] = metric.step // FRAMES_PER_UPDATE
    return out


def delivered_frac(
    snapshot: dict[tuple[str, str], int], results: dict[int, dict[str, Any]]
) -> float:
    """Share of the logged points the server had at the snapshot. A run's points arrive in
    order, so "latest update u" means updates 1..u (gaps would show up in ``full_check``)."""
    logged = sum(r["points"] for r in results.values())
    found = 0
    for result in results.values():
        for key in TRAINER_METRICS:
            found += min(result["updates"], snapshot.get((result.get("run_id") or "", key), 0))
    return found / max(1, logged)


def full_check(uri: str, results: dict[int, dict[str, Any]]) -> tuple[int, int]:
    """(lost, duplicated) over every key of every run, value by value, through the client."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)

    def one(item: tuple[int, dict[str, Any], int, str]) -> tuple[int, int]:
        writer, result, key_index, key = item
        history = client.get_metric_history(result["run_id"], key)
        got = {m.step: m.value for m in history}
        lost = sum(
            1
            for u in range(1, result["updates"] + 1)
            if abs(got.get(u * FRAMES_PER_UPDATE, -1.0) - value(writer, key_index, u)) > 1e-6
        )
        return lost, len(history) - len(got)

    items = [
        (w, r, i, k) for w, r in results.items() if r.get("run_id")
        for i, k in enumerate(TRAINER_METRICS)
    ]  # fmt: skip
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(one, items))
    no_run = sum(r["points"] for r in results.values() if not r.get("run_id"))
    return sum(p[0] for p in parts) + no_run, sum(p[1] for p in parts)


# ----------------------------------------------------------------------------- main


def _writer_entry(index: int, shared: dict[str, Any], config: dict[str, Any], go: Any) -> None:
    root = Path(shared["root"])
    out = root / f"writer-{index:03d}.json"

    class _Go:
        """Tell the parent this writer's run exists, then wait for the common start."""

        def wait(self) -> None:
            (root / f"started-{index:03d}").touch()
            go.wait()
            shared["t_end"] = float((root / "t_end").read_text())

    try:
        writer_main(index, shared, config, _Go(), str(out))
    except BaseException as exc:
        failed = {"error": repr(exc), "points": 0, "blocks": [], "updates": 0,
                  "last_update": 0.0, "finish_delivered": False}  # fmt: skip
        out.write_text(json.dumps(failed))
        raise


def _read(root: Path) -> dict[int, dict[str, Any]]:
    return {int(p.stem[7:]): json.loads(p.read_text()) for p in root.glob("writer-*.json")}


def run(args: argparse.Namespace, root: Path) -> str:
    pace_min, pace_max = (float(x) for x in args.pace.split(":"))
    # Imported once here: the writers are forked and share these pages. matplotlib too (the
    # learning curve at the end): imported in each of 128 writers it cost 0.9 s of CPU each,
    # two minutes of this VM's two cores right inside the delivery window, where a real sweep
    # imports it once per job on the job's own node.
    import matplotlib
    import mlflow  # noqa: F401

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import matplotlib.ticker

    import glamhpc.tracking
    import glamhpc.ui.plots  # noqa: F401
    from glamhpc.config import load_config, to_dict
    from glamhpc.tracking.server import free_port

    config = to_dict(load_config(REPO / "configs" / "quickstart.yaml"))
    os.environ["GLAMHPC_STATE_DIR"] = str(root / "state")  # hand-overs stay in this folder
    (root / "server").mkdir(parents=True, exist_ok=True)
    server = Server(args.backend, root / "server", free_port(), args.writers, args.workers)
    boot = server.start()
    print(f"tracking-server ({args.backend}) on {server.uri} ready in {boot:.1f} s", flush=True)
    ctx = mp.get_context("fork")
    go = ctx.Event()
    shared = {
        "root": str(root), "uri": server.uri, "pace_min": pace_min, "pace_max": pace_max,
        "finish_timeout_s": args.settle_s,
    }  # fmt: skip
    procs = []
    try:
        t0 = time.monotonic()
        for i in range(args.writers):
            proc = ctx.Process(target=_writer_entry, args=(i, shared, config, go))
            proc.start()
            procs.append(proc)
        while len(list(root.glob("started-*"))) < args.writers:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise SystemExit(f"a writer failed to start: {_read(root)}")
            time.sleep(0.2)
        print(f"{args.writers} writers started (runs created) in {time.monotonic() - t0:.1f} s")
        t_start = time.time()
        t_end = t_start + args.duration
        (root / "t_end").write_text(repr(t_end))
        go.set()
        if args.kill_at is not None:
            time.sleep(max(0.0, t_start + args.kill_at - time.time()))
            server.kill()
            print(f"t={time.time() - t_start:.0f}s: server SIGKILLed (whole process group)")
            time.sleep(args.down_s)
            boot = server.start()
            print(f"t={time.time() - t_start:.0f}s: server back, boot took {boot:.1f} s")
        # Every writer's last update ends by t_end + pace_max: the window starts there.
        settle_at = t_end + pace_max + args.settle_s
        time.sleep(max(0.0, settle_at - time.time()))
        snapshot = latest_updates(server.uri)
        for proc in procs:
            proc.join(timeout=max(1.0, settle_at + 180 - time.time()))
        results = _read(root)
        errors = [r["error"] for r in results.values() if "error" in r]
        if errors or len(results) < args.writers:
            print(f"{args.writers - len(results) + len(errors)} writers failed: {errors[:3]}")
        frac = delivered_frac(snapshot, results)
        lost, duplicated = full_check(server.uri, results)
    finally:
        go.set()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        server.stop()
    blocks = sorted(b for r in results.values() for b in r["blocks"])
    p99 = blocks[min(len(blocks) - 1, int(0.99 * len(blocks)))] * 1e3 if blocks else float("nan")
    logged = sum(r["points"] for r in results.values())
    updates = sum(r["updates"] for r in results.values())
    last = max((r["last_update"] for r in results.values()), default=t_start) - t_start
    finished = sum(bool(r["finish_delivered"]) for r in results.values())
    print(
        f"{logged} points in {updates} updates by {len(results)} writers; last update at "
        f"{last:.1f} s; finish() delivered everything in {finished}/{len(results)} runs"
    )
    if blocks:
        p50, worst = blocks[len(blocks) // 2] * 1e3, blocks[-1] * 1e3
        print(
            f"training-thread block: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {worst:.1f} ms "
            f"over {len(blocks)} calls"
        )
    return (
        f"RESULT writers={args.writers} backend={args.backend} delivered_at_end_frac={frac:.4f} "
        f"lost={lost} duplicated={duplicated} p99_block_ms={p99:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8, help="Concurrent runs (processes).")
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of updates.")
    parser.add_argument("--pace", default="0.2:1.0", help="Seconds per update, MIN:MAX.")
    parser.add_argument("--kill-at", type=float, default=None, help="SIGKILL the server then.")
    parser.add_argument("--down-s", type=float, default=20.0, help="Outage length (s).")
    parser.add_argument("--settle-s", type=float, default=30.0, help="Delivery window (s).")
    parser.add_argument("--workers", type=int, default=None, help="Server --workers.")
    parser.add_argument("--keep", type=Path, default=None, help="Work in this folder, keep it.")
    args = parser.parse_args()
    if args.keep is not None:
        result = run(args, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="glamhpc-load-") as tmp:
            result = run(args, Path(tmp))
    sys.stdout.flush()
    print(result)


if __name__ == "__main__":
    main()
