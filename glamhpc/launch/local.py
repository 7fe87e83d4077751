"""`glamhpc train --nproc N`: torchrun's elastic agent on this machine, through the node launcher.

The run name is fixed and the resolved config written here, before any rank starts, so every
rank and every restart by the agent (`dist.max_restarts`) works in the same run directory from
the same config. Signals sent to this process (Ctrl-C, TERM, Slurm's USR2 when it runs inside a
job) are forwarded to the agent, which forwards them to its ranks: they checkpoint and stop.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

from glamhpc.config import Config
from glamhpc.launch.agent import (
    AgentProcess,
    agent_env,
    forwarding,
    log,
    torchrun_argv,
    train_argv,
)
from glamhpc.rundir import RunDir, default_run_name

#: Seconds torchrun gives its ranks to finish a checkpoint after forwarding a signal.
SHUTDOWN_TIMEOUT_S = 60


def run_local(cfg: Config, run_name: str | None, nproc: int, workdir: Path | None = None) -> int:
    """Run ``nproc`` ranks of the run on this machine; returns the agent's exit code."""
    name = run_name or default_run_name(cfg)
    cwd = (workdir or Path.cwd()).resolve()
    run = RunDir.of(cfg, name, cwd)
    snapshot = run.write_launch_snapshot(cfg)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    argv = torchrun_argv(
        train_argv=train_argv(str(snapshot), name),
        nnodes=1,
        nproc_per_node=nproc,
        rendezvous=None,
        log_dir=str(run.torchrun_logs / f"local-{stamp}-{os.getpid()}"),
        max_restarts=cfg.dist.max_restarts,
        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
    )
    threads = (os.cpu_count() or 1) // nproc
    started = time.time()
    agent = AgentProcess(argv, str(cwd), agent_env(os.environ, {}, threads))
    # Ctrl-C asks for what preemption does (checkpoint, then stop), not a rank traceback.
    signals = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT, signal.SIGHUP)
    with forwarding(agent, signals, translate={signal.SIGINT: signal.SIGTERM}) as received:
        code = agent.wait()
        agent.drain(SHUTDOWN_TIMEOUT_S)
    if code != 0 and received and run.preempted_since(started):
        # torchrun's agent exits 1 on a signal even when its ranks saved and stopped cleanly.
        name = signal.Signals(received[0]).name
        log(f"stopped on {name}: checkpoint saved in {run.path}; the same command resumes it")
        return 0
    return code
