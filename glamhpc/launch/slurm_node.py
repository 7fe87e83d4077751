"""`glamhpc node CONFIG --run-name NAME`: one node's part of a job started by plain `sbatch`.

What `slurm/templates/glamhpc.sbatch` runs in each of its tasks (one per node), so that users who
do not submit through the CLI run exactly the agent command `glamhpc submit` runs: the
rendezvous on the job's first node, the port derived from the job id, the same options.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from glamhpc.config import Config
from glamhpc.launch.agent import (
    AgentProcess,
    Rendezvous,
    agent_env,
    forwarding,
    log,
    rdzv_port,
    torchrun_argv,
    train_argv,
)
from glamhpc.rundir import DONE_MARKER, RunDir


class NodeError(RuntimeError):
    """Not inside a Slurm job, or the job's nodes could not be listed."""


def first_node(nodelist: str) -> str:
    """The first host of a Slurm node list (``n[1-2]`` -> ``n1``), as `scontrol` expands it."""
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    hosts = out.stdout.split()
    if out.returncode != 0 or not hosts:
        raise NodeError(f"cannot expand the node list {nodelist!r}: {out.stderr.strip()}")
    return hosts[0]


def run_slurm_node(
    cfg: Config,
    config: str,
    run_name: str,
    nproc_per_node: int,
    max_restarts: int,
    shutdown_timeout_s: int,
) -> int:
    """Run this node's torchrun agent for the job in the environment; returns its exit code.

    ``cfg`` is ``config`` loaded (the ranks read the file itself)."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise NodeError("SLURM_JOB_ID is not set: `glamhpc node` runs inside a Slurm job step")
    nnodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    node = os.environ.get("SLURM_NODEID", "0")
    cwd = Path.cwd()
    run = RunDir.of(cfg, run_name, cwd)
    if run.is_done():
        log(f"{run.path} is finished ({DONE_MARKER} present): nothing to run")
        return 0
    rendezvous = None
    if nnodes > 1:
        host = first_node(os.environ.get("SLURM_JOB_NODELIST", ""))
        rendezvous = Rendezvous(
            host,
            rdzv_port(job_id),
            f"glamhpc-{job_id}",
            is_host=node == "0",
            local_addr=os.environ.get("SLURMD_NODENAME") or None,
        )
    argv = torchrun_argv(
        train_argv=train_argv(str(Path(config).resolve()), run_name),
        nnodes=nnodes,
        nproc_per_node=nproc_per_node,
        rendezvous=rendezvous,
        log_dir=str(run.torchrun_logs / f"{job_id}-node{node}"),
        max_restarts=max_restarts,
        shutdown_timeout_s=shutdown_timeout_s,
    )
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", str(os.cpu_count() or 1)))
    agent = AgentProcess(argv, str(cwd), agent_env(os.environ, {}, cpus // nproc_per_node))
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) + 1
    log(f"node {node} of {nnodes}, attempt {attempt}: {' '.join(argv)}")
    started = time.time()
    # Slurm signals every process of the step (the agent and its ranks too): only survive here.
    signals = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT, signal.SIGHUP)
    with forwarding(agent, signals, forward=False) as received:
        code = agent.wait()
        agent.drain(shutdown_timeout_s)
    if received and run.preempted_since(started):
        # The healthy signal path: the ranks saved. Status 0, so that srun and sacct do not
        # report a failed step; the batch script decides about the requeue.
        update = run.preempted_marker.read_text().strip()
        name = signal.Signals(received[0]).name
        log(f"stopped on {name} at update {update}, checkpoint saved")
        return 0
    return code
