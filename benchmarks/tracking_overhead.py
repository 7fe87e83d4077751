"""Cost of MLflow tracking on the training thread, against a real `mlflow server` on loopback.

What is measured, all in one process against one server started by this script:

* the update: a REAL PPO update of the quickstart (glamhpc.rl.trainer, tiny-t5 on CPU, rollout
  collection + PPO epochs, as `glamhpc train configs/quickstart.yaml` runs it) when glamhpc.rl is
  importable; otherwise a stand-in of similar cost (tiny T5 forward/backward steps). The output
  says which;
* the tracker: wall time the training thread spends inside ``Tracker.log_metrics`` per update
  (the trainer's real metric dicts, ~30 keys), while the background sender ships them to the
  server;
* the synchronous baselines on the same server with the same metric dicts: one
  ``MlflowClient.log_metric`` per key (the naive way) and one ``log_batch`` per update.

    .venv/bin/python benchmarks/tracking_overhead.py [--updates 4]

Last line: ``RESULT logging_overhead_pct=<x>`` = tracker time per update / update time x 100.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


def real_updates(uri: str, root: Path, updates: int) -> tuple[list[float], list[dict], Any]:
    """Run the quickstart trainer for ``updates`` updates; (update seconds, metrics, tracker)."""
    from glamhpc.config import load_config
    from glamhpc.distributed import init_distributed, shutdown
    from glamhpc.rl.trainer import Trainer

    cfg = load_config(
        REPO / "configs" / "quickstart.yaml",
        [
            f"tracking.uri={uri}",
            f"train.run_root={root / 'runs'}",
            f"train.max_updates={updates}",
            "train.progress=false",
            "train.checkpoint_every=1000",
            "tracking.log_model=false",
        ],
    )
    ctx = init_distributed(cfg.dist, cfg.model.device)
    try:
        trainer = Trainer(cfg, "bench", ctx)
        trainer.run()
    finally:
        shutdown()
    frames = cfg.env.num_envs * cfg.ppo.steps_per_env
    seconds = [frames / h["env_steps_per_s"] for h in trainer.history]
    metrics = [{k: v for k, v in h.items() if k != "frames"} for h in trainer.history]
    return seconds, metrics, trainer.tracker


def standin_updates(uri: str, root: Path, updates: int) -> tuple[list[float], list[dict], Any]:
    """No trainer available: tiny-T5 forward/backward steps as the update, 30 metrics each."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from glamhpc.tracking import Tracker

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(
        T5Config(
            vocab_size=1000, d_model=64, d_ff=256, d_kv=16, num_layers=2, num_heads=4,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    ids = torch.randint(3, 1000, (128, 60))
    labels = torch.randint(3, 1000, (128, 3))
    tracker = Tracker.start(root / "runs" / "bench", {"bench": "standin"}, "bench", uri, None, {})
    seconds, metrics = [], []
    for update in range(updates):
        t0 = time.perf_counter()
        for _ in range(16):  # 4 epochs x 4 minibatches
            loss = model(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - t0)
        m = {f"metric_{i:02d}": float(loss) + i for i in range(30)}
        metrics.append(m)
        tracker.log_metrics(m, step=(update + 1) * 512)
    tracker.finish()
    return seconds, metrics, tracker


def sync_baselines(uri: str, metrics: list[dict]) -> tuple[float, float]:
    """Mean seconds per update of synchronous log_metric per key, and of one log_batch."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("bench-sync") or client.get_experiment(
        client.create_experiment("bench-sync")
    )
    run_a = client.create_run(exp.experiment_id, run_name="log_metric").info.run_id
    run_b = client.create_run(exp.experiment_id, run_name="log_batch").info.run_id
    per_metric, per_batch = [], []
    for step, m in enumerate(metrics):
        t0 = time.perf_counter()
        for key, value in m.items():
            client.log_metric(run_a, key, value, step=step)
        per_metric.append(time.perf_counter() - t0)
        now = int(time.time() * 1000)
        t0 = time.perf_counter()
        client.log_batch(run_b, metrics=[Metric(k, v, now, step) for k, v in m.items()])
        per_batch.append(time.perf_counter() - t0)
    return statistics.mean(per_metric), statistics.mean(per_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=4, help="Updates measured.")
    args = parser.parse_args()

    from glamhpc.tracking.server import free_port, start_server

    try:
        import glamhpc.rl.trainer  # noqa: F401

        mode = "real quickstart PPO updates (glamhpc.rl.trainer, tiny-t5, CPU)"
        run = real_updates
    except ImportError as exc:
        mode = f"stand-in updates (tiny T5 fwd/bwd; glamhpc.rl not importable: {exc})"
        run = standin_updates
    with tempfile.TemporaryDirectory(prefix="glamhpc-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        server = start_server(
            f"sqlite:///{root / 'mlflow.db'}",
            str(root / "artifacts"),
            port=free_port(),
            log_path=root / "server.log",
            ready_timeout_s=180,
        )
        print(f"mlflow server on {server.uri} ready in {time.perf_counter() - t0:.1f} s")
        try:
            seconds, metrics, tracker = run(server.uri, root, args.updates)
            sync_metric_s, sync_batch_s = sync_baselines(server.uri, metrics)
        finally:
            server.stop()
    n_keys = statistics.mean(len(m) for m in metrics)
    update_s = statistics.mean(seconds)
    tracker_s = tracker.call_seconds / max(1, tracker.calls)
    pct = 100.0 * tracker_s / update_s
    sender_s = tracker._sender.cpu_seconds / max(1, len(seconds))
    print(f"update: {mode}")
    print(f"updates measured: {len(seconds)}, metrics per update: {n_keys:.0f}")
    print(f"{'':38s}{'per update':>14s}{'% of update':>14s}{'vs Tracker':>12s}")
    rows = [
        ("training update (mean)", update_s),
        ("Tracker.log_metrics (training thread)", tracker_s),
        ("sync log_batch, 1 call", sync_batch_s),
        (f"sync log_metric, {n_keys:.0f} calls", sync_metric_s),
    ]
    for name, value in rows:
        print(
            f"{name:38s}{value * 1e3:11.3f} ms{100 * value / update_s:13.3f}%"
            f"{value / tracker_s:11.0f}x"
        )
    print(
        f"background sender thread CPU: {sender_s * 1e3:.1f} ms per update "
        f"({100 * sender_s / update_s:.3f}% of an update; an upper bound on what it takes "
        f"from training through the GIL, not on the training thread's critical path)"
    )
    print(
        f"sync log_metric / Tracker = {sync_metric_s / tracker_s:.0f}x, "
        f"sync log_batch / Tracker = {sync_batch_s / tracker_s:.0f}x"
    )
    sys.stdout.flush()
    print(f"RESULT logging_overhead_pct={pct:.4f}")


if __name__ == "__main__":
    main()
