"""What each node of a submitted job runs: the node task submitit calls, around torchrun's agent.

The submitted callable (:class:`TorchrunJob`) runs once per node (one Slurm task per node). It
starts the node's torchrun agent (:mod:`glamhpc.launch.agent`, which builds the command) and
waits. Signals, not exit codes, drive preemption (see docs/CONTRACTS.md, "launch"):

- Slurm delivers USR2 (time limit) and TERM (preemption, scancel) to every process of the job
  step: the ranks save a checkpoint at their next safe point and exit 0 after writing PREEMPTED.
- On Slurm, the node task takes USR2 and TERM over from submitit (whose handler would print a
  traceback-like exit: status 255, step FAILED). It waits until every process of the local
  agent's session is gone (the save is collective, so rank 0's node finishing means the checkpoint
  is complete everywhere); global rank 0 then stores the requeued submission, runs
  ``scontrol requeue`` and prints one line ("preempted at update N, checkpoint saved, requeued as
  attempt K"); every node task exits 0. With the local executor, submitit calls
  :meth:`TorchrunJob.checkpoint` from its USR2 handler as before.
- Every requeue counts against ``launch.max_requeues``, ours and the ones Slurm starts itself
  (:mod:`glamhpc.launch.attempts`); past the bound the job stops with one line and exit status 3.
- The requeued job runs the same command with the same ``--run-name``: the trainer resumes from
  its latest checkpoint into the same run directory and MLflow run. A run with a DONE marker is
  not started again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
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
from glamhpc.launch.attempts import (
    REASON_TAG,
    REQUEUE_LIMIT_EXIT,
    REQUEUES_TAG,
    Attempts,
    counted_requeues,
    read_attempts,
    slurm_reason,
    stop_reason,
    write_attempts,
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
        self.__setstate__({"resources": resources})

    # Process handles never travel: a requeued job starts from a clean object.
    def __getstate__(self) -> dict[str, Any]:
        return {"resources": self.resources}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.resources = state["resources"]
        self._agent: AgentProcess | None = None
        self._signal: int | None = None
        self._signals: list[int] = []
        """Every stop signal received, in order (the first tells preemption from time limit)."""
        self._submission: Any = None
        """submitit's DelayedSubmission of this job (its timeout settings travel on requeue)."""
        self._started = self._started_wall = 0.0

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
                is_host=env.node == 0,
                local_addr=env.hostnames[env.node],
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
        from glamhpc.containers import job_command, resolve_image_id

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
            image_id=resolve_image_id(str(self.resources.container), os.environ),
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
        # Requeues Slurm started itself (node failure, scontrol requeue) count too.
        spec = self._count_requeues(spec, env)
        # torchrun would create it too, but a container bind needs the folder beforehand.
        Path(spec.log_dir).mkdir(parents=True, exist_ok=True)
        argv, agent_environ = self.node_command(spec, env)
        self._known_time_limit()
        self._watch_signals()
        self._started = time.monotonic()
        self._started_wall = time.time()
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
            if self._slurm() and signal.SIGUSR2 in self._signals:
                return self._requeue(spec, env, run)
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

    # ------------------------------------------------------------------ requeues
    @staticmethod
    def _slurm() -> bool:
        return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"

    def _count_requeues(self, spec: RunSpec, env: submitit.JobEnvironment) -> RunSpec:
        """``spec`` with every requeue so far counted; stops the job past launch.max_requeues.

        The count and the last reason reach the ranks as MLflow tags (GLAMHPC_RUN_TAGS, the tags
        every launcher gives a run) and `glamhpc jobs` through the attempts file."""
        requeues = counted_requeues(spec.requeues, os.environ)
        job_id = str(env.job_id)
        recorded_before = read_attempts(env.paths.folder, job_id)
        reason = recorded_before.reason if recorded_before is not None else ""
        if requeues > spec.requeues:  # Slurm requeued the job without us
            reason = slurm_reason(job_id)
        if env.global_rank == 0:
            update = recorded_before.update if recorded_before is not None else None
            write_attempts(
                env.paths.folder, job_id, Attempts(requeues + 1, requeues, reason, update)
            )
        limit = self.resources.max_requeues
        if requeues > limit:
            log(
                f"not started: job {job_id} was requeued {requeues} "
                f"time{'s' if requeues != 1 else ''} (last: {reason or 'requeued'}), more than "
                f"launch.max_requeues={limit}; resubmit the same run name to continue "
                f"{spec.run_dir}"
            )
            raise SystemExit(REQUEUE_LIMIT_EXIT)
        tags = json.loads(spec.env.get("GLAMHPC_RUN_TAGS", "{}"))
        tags[REQUEUES_TAG] = str(requeues)
        if reason:
            tags[REASON_TAG] = reason
        env_vars = {**spec.env, "GLAMHPC_RUN_TAGS": json.dumps(tags, sort_keys=True)}
        return dataclasses.replace(spec, requeues=requeues, env=env_vars)

    def _requeue(self, spec: RunSpec, env: submitit.JobEnvironment, run: RunDir) -> JobOutcome:
        """After USR2 on Slurm: global rank 0 requeues the job (within launch.max_requeues) and
        says so in one line; every node task then exits 0, not submitit's 255 (past the bound:
        one line and status 3)."""
        if env.global_rank != 0:
            # Rank 0's node requeues the job, which ends this task (TERM, then KILL): wait.
            return self._await_requeue(spec, env, quiet=True)
        first = signal.Signals(self._signals[0]).name
        elapsed = time.monotonic() - self._started
        res = self.resources
        reason = stop_reason(first, elapsed, res.time_min, res.signal_delay_s)
        update = _marker_update(run, self._started_wall)
        where = f"{reason} at update {update}" if update is not None else f"{reason} ({first})"
        saved = "checkpoint saved" if update is not None else "no new checkpoint"
        job_id = str(env.job_id)
        if spec.requeues >= res.max_requeues:
            log(
                f"{where}, {saved}; not requeued: launch.max_requeues={res.max_requeues} "
                f"reached; resubmit the same run name to continue {spec.run_dir}"
            )
            write_attempts(
                env.paths.folder,
                job_id,
                Attempts(spec.requeues + 1, spec.requeues, "requeue limit", update),
            )
            raise SystemExit(REQUEUE_LIMIT_EXIT)
        nxt = dataclasses.replace(spec, requeues=spec.requeues + 1)
        self._store_submission(nxt, env)
        # Recorded before the requeue: the next attempt reads its reason from here.
        write_attempts(
            env.paths.folder, job_id, Attempts(nxt.requeues + 1, nxt.requeues, reason, update)
        )
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)
        log(f"{where}, {saved}, requeued as attempt {nxt.requeues + 1}")
        # Not a return: submitit would record a result for an attempt that is not the last one.
        raise SystemExit(0)

    def _store_submission(self, spec: RunSpec, env: submitit.JobEnvironment) -> None:
        """What submitit's own checkpoint path stores: the requeued attempt's call, pickled
        where the job's command reads it."""
        from submitit.core import utils

        delayed = submitit.helpers.DelayedSubmission(self, spec)
        previous = self._submission
        if previous is not None:
            delayed.set_timeout(previous._timeout_min, previous._timeout_countdown)
        with utils.temporary_save_path(env.paths.submitted_pickle) as tmp:
            delayed.dump(tmp)

    def _outcome(self, status: str, spec: RunSpec, env: submitit.JobEnvironment) -> JobOutcome:
        return JobOutcome(
            status=status,
            run_name=spec.run_name,
            run_dir=spec.run_dir,
            host=socket.gethostname(),
            node=env.node,
            requeues=spec.requeues,
        )

    def _await_requeue(
        self, spec: RunSpec, env: submitit.JobEnvironment, *, quiet: bool = False
    ) -> JobOutcome:
        """The ranks stopped on a signal. Returning now would end the job as COMPLETED before
        Slurm's follow-up (preemption sends TERM, then USR2 -> requeue; scancel kills after
        KillWait), so wait to be requeued or killed, bounded in case neither comes.

        On Slurm, the requeue's own TERM ends the wait with status 0 (``quiet``: a node other
        than rank 0's, whose task says nothing more than rank 0's one line)."""
        name = signal.Signals(self._signal or signal.SIGTERM).name
        if not quiet:
            log(f"ranks stopped on {name}; waiting for the requeue or the end of the job")
        seen = len(self._signals)
        deadline = time.monotonic() + max(60, self.resources.signal_delay_s)
        while time.monotonic() < deadline:
            if quiet and len(self._signals) > seen:
                raise SystemExit(0)  # as rank 0's node after its requeue
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
        """Remember which signal arrived, then run the handler that was there (submitit's),
        except on Slurm, where :meth:`_requeue` does its work once the ranks are gone."""
        slurm = self._slurm()
        if slurm:
            # submitit only logs SIGCONT ("Bypassing signal", once per handler): noise in the
            # middle of a requeue, whose SIGCONT needs no handling.
            signal.signal(signal.SIGCONT, signal.SIG_DFL)
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if sig == signal.SIGUSR2:
                self._submission = getattr(getattr(previous, "__self__", None), "_delayed", None)

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                self._signals.append(signum)
                # USR2 (requeue) wins over an earlier TERM.
                if self._signal != signal.SIGUSR2:
                    self._signal = signum
                if callable(previous) and not slurm:
                    previous(signum, frame)

            signal.signal(sig, handler)

    def _forward(self, sig: int) -> None:
        if self._agent is not None:
            self._agent.forward(sig)


def _marker_update(run: RunDir, since: float) -> int | None:
    """The update the ranks saved at, when they wrote PREEMPTED during this attempt."""
    if not run.preempted_since(since):
        return None
    text = run.preempted_marker.read_text().strip()
    return int(text) if text.isdigit() else None
