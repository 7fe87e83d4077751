"""What each node of a job runs: one torchrun elastic agent driving ``glamhpc train`` ranks.

The submitted callable (:class:`TorchrunJob`) runs once per node (one Slurm task per node). It
builds the node's torchrun command, runs it in its own session and waits. Signals, not exit
codes, drive preemption (see docs/CONTRACTS.md, "launch"):

- Slurm delivers USR2 (time limit) and TERM (preemption, scancel) to every process of the job
  step: the ranks save a checkpoint at their next safe point and exit 0 after writing PREEMPTED.
  torchrun's agent is told to handle USR2 too (``--signals-to-handle``), otherwise USR2's default
  action would kill it and leave the ranks orphaned.
- submitit calls :meth:`TorchrunJob.checkpoint` on global rank 0 only, from its USR2 handler.
  It waits until every process of the local torchrun session is gone (the save is collective, so
  rank 0's node finishing means the checkpoint is complete everywhere) and only then returns the
  requeue request; submitit then runs ``scontrol requeue``.
- The requeued job runs the same command with the same ``--run-name``: the trainer resumes from
  its latest checkpoint into the same run directory and MLflow run. A run with a DONE marker is
  not started again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from glamhpc.launch.resources import UNKNOWN_TIME_MIN, Resources

#: Markers the trainer writes into the run directory (glamhpc.rl.trainer).
DONE_MARKER = "DONE"
PREEMPTED_MARKER = "PREEMPTED"

#: Signals torchrun's agent must survive and forward to its ranks: its defaults plus Slurm's
#: pre-timeout USR2 (submitit's choice of signal).
AGENT_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2"

#: Per-rank log line prefix (torchrun ``--tee``): `glamhpc logs JOB --rank R` greps by it.
RANK_PREFIX_TEMPLATE = "[rank${rank}]:"


#: Environment of every torchrun agent glamhpc starts. By default (torch >= 2.5) the agent's c10d
#: rendezvous store is shared with the ranks and outlives a worker restart, so restarted ranks
#: can read the previous attempt's process-group keys (a dead peer's address: "Gloo
#: connectFullMesh failed ... Connection refused", pytorch/pytorch#135712). Opting out gives
#: every rendezvous round a fresh store hosted by its rank 0, so `dist.max_restarts` restarts
#: reliably.
AGENT_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def rank_prefix(rank: int) -> str:
    return RANK_PREFIX_TEMPLATE.replace("${rank}", str(rank))


@dataclass(frozen=True)
class Rendezvous:
    """c10d rendezvous hosted by the torchrun agent on the job's first node."""

    host: str
    port: int
    run_id: str


def rdzv_port(job_id: str) -> int:
    """A port in 20000-29999 (below Linux's ephemeral range) derived from the Slurm job id.

    Jobs sharing a node (array elements, or the "nodes" of a one-machine test cluster) get
    different ports; a requeued job keeps its id and therefore its port.
    """
    digits = "".join(ch for ch in job_id.split("_")[0] if ch.isdigit())
    number = int(digits) if digits else sum(map(ord, job_id))
    return 20000 + number % 10000


def torchrun_argv(
    *,
    train_argv: Sequence[str],
    nnodes: int,
    nproc_per_node: int,
    rendezvous: Rendezvous | None,
    log_dir: str,
    max_restarts: int = 0,
    shutdown_timeout_s: int = 30,
    python: str = sys.executable,
) -> list[str]:
    """The per-node command (pure). ``rendezvous`` None: a single node (``--standalone``)."""
    argv = [python, "-m", "torch.distributed.run", f"--nnodes={nnodes}"]
    argv.append(f"--nproc-per-node={nproc_per_node}")
    if rendezvous is None:
        # torchrun picks a free port itself: no clash between jobs sharing a machine.
        argv.append("--standalone")
    else:
        argv += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rendezvous.host}:{rendezvous.port}",
            f"--rdzv-id={rendezvous.run_id}",
        ]
    argv += [
        f"--max-restarts={max_restarts}",
        # Fail fast: one failing rank takes the group down instead of a collective timeout.
        "--monitor-interval=0.5",
        f"--signals-to-handle={AGENT_SIGNALS}",
        f"--shutdown-timeout={shutdown_timeout_s}",
        # Every rank's output, prefixed with its global rank, in the node log (and a copy per
        # rank under log_dir): one place to read, and `logs --rank R` can pick a rank out.
        f"--log-dir={log_dir}",
        "--tee=3",
        "-m",
        "glamhpc",
        *train_argv,
    ]
    return argv


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
        return ["train", self.config_path, "--run-name", self.run_name]


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


def session_processes(sid: int) -> list[int]:
    """Pids of live (non-zombie) processes of session ``sid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Fields after the command name, which may contain spaces: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry))
    return found


def _log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[glamhpc launch {stamp}] {message}", flush=True)


class TorchrunJob(submitit.helpers.Checkpointable):
    """The callable submitit runs on every node of a job: ``job(spec)`` trains ``spec``'s run."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._proc: Any = None
        self._exit_code: int | None = None
        self._signal: int | None = None

    # Process handles never travel: a requeued job starts from a clean object.
    def __getstate__(self) -> dict[str, Any]:
        return {"resources": self.resources}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.resources = state["resources"]
        self._proc = None
        self._exit_code = None
        self._signal = None

    # ------------------------------------------------------------------ command
    def node_argv(self, spec: RunSpec, env: submitit.JobEnvironment) -> list[str]:
        """This node's command: torchrun (inside the container when one is configured)."""
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
            argv = self._containerised(argv, spec)
        return argv

    def rank_env(self, spec: RunSpec) -> dict[str, str]:
        env = dict(os.environ)
        env.update(spec.env)
        env.update(AGENT_ENV)
        env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] = RANK_PREFIX_TEMPLATE
        env["PYTHONUNBUFFERED"] = "1"
        # Share the task's CPUs between the node's ranks instead of each rank using them all.
        env.setdefault(
            "OMP_NUM_THREADS",
            str(max(1, self.resources.cpus_per_task // self.resources.nproc_per_node)),
        )
        return env

    def _containerised(self, argv: list[str], spec: RunSpec) -> list[str]:
        """Wrap the node command for the container engine (glamhpc.containers' contract)."""
        from glamhpc.containers import env_binds, forwarded_env, wrap_command

        extra = {
            **spec.env,
            **AGENT_ENV,
            "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX_TEMPLATE,
            "PYTHONUNBUFFERED": "1",
        }
        env = forwarded_env(extra=extra)
        binds = [spec.workdir]
        # The run dir, the config snapshot and the logs may live outside the working directory
        # (an absolute train.run_root): bind what the job reads and writes.
        workdir = Path(spec.workdir).resolve()
        for path in (spec.run_dir, str(Path(spec.config_path).parent), spec.log_dir):
            if not Path(path).resolve().is_relative_to(workdir) and path not in binds:
                binds.append(path)
        return wrap_command(
            argv,
            str(self.resources.container),
            binds=[*binds, *env_binds(env)],
            env=env,
            gpus=self.resources.gpus_per_node > 0,
            workdir=spec.workdir,
        )

    # ------------------------------------------------------------------ running
    def __call__(self, spec: RunSpec) -> JobOutcome:
        env = submitit.JobEnvironment()
        host = socket.gethostname()
        done = Path(spec.run_dir) / DONE_MARKER
        if done.exists():
            _log(f"{spec.run_dir} is finished ({DONE_MARKER} present): nothing to run")
            return self._outcome("done", spec, env)
        # torchrun would create it too, but a container bind needs the folder beforehand.
        Path(spec.log_dir).mkdir(parents=True, exist_ok=True)
        argv = self.node_argv(spec, env)
        self._known_time_limit()
        self._watch_signals()
        _log(
            f"node {env.node + 1}/{env.num_nodes} on {host}, attempt {spec.requeues + 1}: "
            + shlex.join(argv)
        )
        self._proc = _popen(argv, spec.workdir, self.rank_env(spec))
        try:
            code = self._wait_exit()
        except KeyboardInterrupt:
            # The local executor cancels with SIGINT to this process only: stop the ranks too,
            # or they would keep training as orphans.
            self._forward(signal.SIGTERM)
            self._drain(10)
            raise
        self._drain(self.resources.shutdown_timeout_s)
        if done.exists():
            _log(f"training finished: {spec.run_dir}")
            return self._outcome("done", spec, env)
        if self._signal is not None:
            return self._await_requeue(spec, env)
        raise RuntimeError(
            f"torchrun exited with code {code} on {host} (node {env.node}) and the run is not "
            f"finished; read the ranks' output with `glamhpc logs {env.job_id}`"
        )

    def checkpoint(self, spec: RunSpec) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on global rank 0 when USR2 arrives: wait for the save, requeue."""
        if os.environ.get("SUBMITIT_EXECUTOR") == "local":
            # The local controller signals this process only; Slurm signals every process.
            self._forward(signal.SIGUSR2)
        self._drain(self.resources.shutdown_timeout_s + 10)
        if spec.requeues >= self.resources.max_requeues:
            _log(
                f"not requeued: launch.max_requeues={self.resources.max_requeues} reached; "
                f"resubmit the same run name to continue {spec.run_dir}"
            )
            return None
        _log(f"checkpoint saved; requeueing (requeue {spec.requeues + 1})")
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
        _log(f"ranks stopped on {name}; waiting for the requeue or the end of the job")
        deadline = time.monotonic() + max(60, self.resources.signal_delay_s)
        while time.monotonic() < deadline:
            time.sleep(0.5)
        _log("neither requeued nor killed: giving up; resubmit the same run name to resume")
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

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                # USR2 (requeue) wins over an earlier TERM.
                if self._signal != signal.SIGUSR2:
                    self._signal = signum
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, handler)

    def _forward(self, sig: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def _reap(self) -> bool:
        """Collect torchrun's exit status without blocking; True once it has exited.

        os.waitpid, not Popen.wait: this also runs inside submitit's signal handler while the
        main code may be in the middle of a wait, and Popen.wait's lock is not reentrant.
        """
        if self._exit_code is not None:
            return True
        try:
            pid, status = os.waitpid(self._proc.pid, os.WNOHANG)
        except ChildProcessError:
            return self._exit_code is not None
        if pid == 0:
            return False
        self._exit_code = os.waitstatus_to_exitcode(status)
        self._proc.returncode = self._exit_code  # keeps Popen.__del__ quiet
        return True

    def _wait_exit(self) -> int:
        while not self._reap():
            time.sleep(0.2)
        assert self._exit_code is not None
        return self._exit_code

    def _drain(self, timeout_s: float) -> None:
        """Wait until torchrun and every rank it started (its session) have exited.

        A second signal can make the agent exit before its ranks; the checkpoint is complete only
        when the ranks are gone, so they are waited for too.
        """
        if self._proc is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._reap()
            if self._exit_code is not None and not session_processes(self._proc.pid):
                return
            time.sleep(0.2)
        _log(f"ranks still running {timeout_s:.0f}s after the signal; continuing anyway")


def _popen(argv: list[str], cwd: str, env: dict[str, str]) -> Any:
    import subprocess

    # Own session: its processes can be signalled as a group (local executor) and waited for
    # as a set (`session_processes`), even after the agent has exited before its ranks.
    return subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True)
