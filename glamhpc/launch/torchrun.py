"""What each node of a submitted job runs: the node task submitit calls, around torchrun's agent.

The submitted callable (:class:`TorchrunJob`) runs once per node (one Slurm task per node). It
starts the node's torchrun agent (:mod:`glamhpc.launch.agent`, which builds the command) and
waits. Signals, not exit codes, drive preemption (see docs/CONTRACTS.md, "launch"):

- Slurm delivers USR2 (time limit) and TERM (preemption, scancel) to every process of the job
  step: the ranks save a checkpoint at their next safe point and exit 0 after writing PREEMPTED.
- submitit calls :meth:`TorchrunJob.checkpoint` on global rank 0 only, from its USR2 handler.
  It waits until every process of the local agent's session is gone (the save is collective, so
  rank 0's node finishing means the checkpoint is complete everywhere) and only then returns the
  requeue request; submitit then runs ``scontrol requeue``.
- The requeued job runs the same command with the same ``--run-name``: the trainer resumes from
  its latest checkpoint into the same run directory and MLflow run. A run with a DONE marker is
  not started again.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import submitit

from glamhpc.launch.agent import (
    AGENT_SIGNALS,
    RANK_ENV,
    AgentProcess,
    Rendezvous,
    agent_env,
    log,
    rank_prefix,
    rdzv_port,
    session_processes,
    torchrun_argv,
    train_argv,
)
from glamhpc.launch.job_result import recorded
from glamhpc.launch.resources import UNKNOWN_TIME_MIN, Resources
from glamhpc.rundir import DONE_MARKER, RunDir

__all__ = [
    "AGENT_SIGNALS",
    "JobOutcome",
    "Rendezvous",
    "RunSpec",
    "TorchrunJob",
    "rank_prefix",
    "rdzv_port",
    "session_processes",
    "torchrun_argv",
]


@dataclass(frozen=True)
class RunSpec:
    """One training run as its job executes it (pickled with the job; paths are absolute)."""

    config_path: str
    """Resolved config snapshot written at submit time (later edits of the YAML do not leak)."""
    run_name: str
    run_dir: str
    workdir: str
    """Working directory of the ranks: relative paths in the config resolve against it."""
    log_dir: str
    """torchrun's per-rank log folder."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the ranks (GLAMHPC_PARENT_RUN_ID, GLAMHPC_RUN_TAGS, ...)."""
    requeues: int = 0
    """How many times this run's job was requeued so far (bounded by launch.max_requeues)."""

    def train_argv(self) -> list[str]:
        return train_argv(self.config_path, self.run_name)


@dataclass(frozen=True)
class JobOutcome:
    """What a node task returns (submitit pickles it as the job's result)."""

    status: str
    """done (DONE marker present), stopped (signalled and not requeued)."""
    run_name: str
    run_dir: str
    host: str
    node: int
    requeues: int


class TorchrunJob(submitit.helpers.Checkpointable):
    """The callable submitit runs on every node of a job: ``job(spec)`` trains ``spec``'s run."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._agent: AgentProcess | None = None
        self._signal: int | None = None

    # Process handles never travel: a requeued job starts from a clean object.
    def __getstate__(self) -> dict[str, Any]:
        return {"resources": self.resources}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.resources = state["resources"]
        self._agent = None
        self._signal = None

    # ------------------------------------------------------------------ command
    def node_argv(self, spec: RunSpec, env: submitit.JobEnvironment) -> list[str]:
        """This node's command: torchrun (inside the container when one is configured)."""
        return self.node_command(spec, env)[0]

    def node_command(
        self, spec: RunSpec, env: submitit.JobEnvironment
    ) -> tuple[list[str], dict[str, str]]:
        """This node's command and the environment to start it with."""
        res = self.resources
        rendezvous = None
        if res.nodes > 1:
            job_id = os.environ.get("SLURM_JOB_ID", str(env.job_id))
            rendezvous = Rendezvous(
                host=env.hostnames[0],
                port=rdzv_port(job_id),
                run_id=f"glamhpc-{env.job_id}".replace("_", "-"),
            )
        # Inside an image, its own Python (python3 exists in every base glamhpc builds on).
        python = "python3" if res.container else sys.executable
        argv = torchrun_argv(
            train_argv=spec.train_argv(),
            nnodes=res.nodes,
            nproc_per_node=res.nproc_per_node,
            rendezvous=rendezvous,
            log_dir=os.path.join(spec.log_dir, f"{env.job_id}-node{env.node}"),
            max_restarts=res.max_restarts,
            shutdown_timeout_s=res.shutdown_timeout_s,
            python=python,
        )
        if res.container:
            return self._containerised(argv, spec)
        return argv, self.rank_env(spec)

    def rank_env(self, spec: RunSpec) -> dict[str, str]:
        res = self.resources
        return agent_env(os.environ, spec.env, res.cpus_per_task // res.nproc_per_node)

    def _containerised(self, argv: list[str], spec: RunSpec) -> tuple[list[str], dict[str, str]]:
        """Wrap the node command for the container engine (glamhpc.containers' contract):
        variables by name, the job's own folders bound, Docker as the calling user with the
        allocation's GPUs."""
        from glamhpc.containers import job_command

        binds = [spec.workdir]
        # The run dir, the config snapshot and the logs may live outside the working directory
        # (an absolute train.run_root): bind what the job reads and writes.
        workdir = Path(spec.workdir).resolve()
        for path in (spec.run_dir, str(Path(spec.config_path).parent), spec.log_dir):
            if not Path(path).resolve().is_relative_to(workdir) and path not in binds:
                binds.append(path)
        wrapped = job_command(
            argv,
            str(self.resources.container),
            environ=self.rank_env(spec),
            extra_env={**spec.env, **RANK_ENV},
            binds=binds,
            gpus=self.resources.gpus_per_node > 0,
            workdir=spec.workdir,
        )
        return wrapped.argv, wrapped.env

    # ------------------------------------------------------------------ running
    def __call__(self, spec: RunSpec) -> JobOutcome:
        # A JSON result for `glamhpc jobs`, which never unpickles submitit's result file.
        with recorded():
            return self._train(spec)

    def _train(self, spec: RunSpec) -> JobOutcome:
        env = submitit.JobEnvironment()
        host = socket.gethostname()
        run = RunDir(Path(spec.run_dir))
        if run.is_done():
            log(f"{spec.run_dir} is finished ({DONE_MARKER} present): nothing to run")
            return self._outcome("done", spec, env)
        # torchrun would create it too, but a container bind needs the folder beforehand.
        Path(spec.log_dir).mkdir(parents=True, exist_ok=True)
        argv, agent_environ = self.node_command(spec, env)
        self._known_time_limit()
        self._watch_signals()
        log(
            f"node {env.node + 1}/{env.num_nodes} on {host}, attempt {spec.requeues + 1}: "
            + shlex.join(argv)
        )
        agent = self._agent = AgentProcess(argv, spec.workdir, agent_environ)
        try:
            code = agent.wait()
        except KeyboardInterrupt:
            # The local executor cancels with SIGINT to this process only: stop the ranks too,
            # or they would keep training as orphans.
            agent.forward(signal.SIGTERM)
            agent.drain(10)
            raise
        agent.drain(self.resources.shutdown_timeout_s)
        if run.is_done():
            log(f"training finished: {spec.run_dir}")
            return self._outcome("done", spec, env)
        if self._signal is not None:
            return self._await_requeue(spec, env)
        raise RuntimeError(
            f"torchrun exited with code {code} on {host} (node {env.node}) and the run is not "
            f"finished; read the ranks' output with `glamhpc logs {env.job_id}`"
        )

    # submitit treats a None return as "do not requeue" (core.job_environment._checkpoint), but
    # Checkpointable.checkpoint is annotated to always return a DelayedSubmission.
    def checkpoint(  # type: ignore[override]
        self, spec: RunSpec
    ) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on global rank 0 when USR2 arrives: wait for the save, requeue."""
        if os.environ.get("SUBMITIT_EXECUTOR") == "local":
            # The local controller signals this process only; Slurm signals every process.
            self._forward(signal.SIGUSR2)
        if self._agent is not None:
            self._agent.drain(self.resources.shutdown_timeout_s + 10)
        if spec.requeues >= self.resources.max_requeues:
            log(
                f"not requeued: launch.max_requeues={self.resources.max_requeues} reached; "
                f"resubmit the same run name to continue {spec.run_dir}"
            )
            return None
        log(f"checkpoint saved; requeueing (requeue {spec.requeues + 1})")
        return submitit.helpers.DelayedSubmission(
            self, dataclasses.replace(spec, requeues=spec.requeues + 1)
        )

    def _outcome(self, status: str, spec: RunSpec, env: submitit.JobEnvironment) -> JobOutcome:
        return JobOutcome(
            status=status,
            run_name=spec.run_name,
            run_dir=spec.run_dir,
            host=socket.gethostname(),
            node=env.node,
            requeues=spec.requeues,
        )

    def _await_requeue(self, spec: RunSpec, env: submitit.JobEnvironment) -> JobOutcome:
        """The ranks stopped on a signal. Returning now would end the job as COMPLETED before
        Slurm's follow-up (preemption sends TERM, then USR2 -> requeue; scancel kills after
        KillWait), so wait to be requeued or killed, bounded in case neither comes."""
        name = signal.Signals(self._signal or signal.SIGTERM).name
        log(f"ranks stopped on {name}; waiting for the requeue or the end of the job")
        deadline = time.monotonic() + max(60, self.resources.signal_delay_s)
        while time.monotonic() < deadline:
            time.sleep(0.5)
        log("neither requeued nor killed: giving up; resubmit the same run name to resume")
        return self._outcome("stopped", spec, env)

    @staticmethod
    def _known_time_limit() -> None:
        """Give submitit's signal handler a number where no --time was set.

        Without --time, submitit records the job's limit as None and its USR2 handler would fail
        computing "timed out?" from it (so no checkpoint, no requeue). Any large value works:
        the requeue bound that matters is launch.max_requeues, counted in `checkpoint`.
        """
        handler = signal.getsignal(signal.SIGUSR2)
        delayed = getattr(getattr(handler, "__self__", None), "_delayed", None)
        if delayed is not None and getattr(delayed, "_timeout_min", 0) is None:
            delayed._timeout_min = UNKNOWN_TIME_MIN

    def _watch_signals(self) -> None:
        """Remember which signal arrived, then run the handler that was there (submitit's)."""
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                # USR2 (requeue) wins over an earlier TERM.
                if self._signal != signal.SIGUSR2:
                    self._signal = signum
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, handler)

    def _forward(self, sig: int) -> None:
        if self._agent is not None:
            self._agent.forward(sig)
