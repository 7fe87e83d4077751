"""`glamhpc train --nproc N`: torchrun's elastic agent on this machine, running `glamhpc train`.

The run name is fixed here, before any rank starts, so that every rank and every restart by the
agent (`dist.max_restarts`) works in the same run directory and resumes its latest checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from glamhpc.config import Config


def torchrun_command(
    nproc: int, config: str | None, overrides: list[str], run_name: str, cfg: Config
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={cfg.dist.max_restarts}",
        # Fail fast: one failing rank takes the group down instead of a collective timeout.
        "--monitor-interval=0.5",
        "-m",
        "glamhpc",
        "train",
    ]
    if config:
        cmd.append(config)
    for item in overrides:
        cmd += ["--set", item]
    return [*cmd, "--run-name", run_name]


def run_torchrun(
    nproc: int, config: str | None, overrides: list[str], run_name: str | None, cfg: Config
) -> int:
    from glamhpc.rl.trainer import default_run_name

    name = run_name or default_run_name(cfg)
    cmd = torchrun_command(nproc, config, overrides, name, cfg)
    from glamhpc.launch.torchrun import AGENT_ENV

    proc = subprocess.Popen(cmd, env={**os.environ, **AGENT_ENV})

    def forward(signum: int, frame: object) -> None:
        proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, forward)
    return proc.wait()
