"""torchrun's elastic agent on one node: the one place that builds its command and runs it.

Every launcher goes through here: `glamhpc train --nproc N` (one machine), `glamhpc submit` /
`sweep` (the submitit node task, :mod:`glamhpc.launch.torchrun`) and the plain sbatch template
(`glamhpc node`). So every agent gets the same signal handling, per-rank logs, shutdown timeout,
rendezvous-store setting and a resolved config snapshot.

Signals, not exit codes, drive preemption: USR2 (Slurm's pre-timeout signal) and TERM reach the
ranks, which save at their next safe point and exit 0 after writing PREEMPTED. The agent is told
to survive USR2 (``--signals-to-handle``) and forward it, or USR2's default action would kill the
agent and orphan the ranks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

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

#: What the ranks need on top of the caller's environment, wherever they run.
RANK_ENV = {
    **AGENT_ENV,
    "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX_TEMPLATE,
    "PYTHONUNBUFFERED": "1",
}


def rank_prefix(rank: int) -> str:
    return RANK_PREFIX_TEMPLATE.replace("${rank}", str(rank))


@dataclass(frozen=True)
class Rendezvous:
    """c10d rendezvous hosted by the torchrun agent on the job's first node."""

    host: str
    port: int
    run_id: str
    is_host: bool | None = None
    """Whether this node hosts the store (the job's first node). Said explicitly because torch's
    guess compares ``host`` with this machine's hostname, which a container (``docker run
    --network host`` reports the daemon's hostname) or a multi-homed node can get wrong: then
    no node hosts the store and every agent times out. None: torch guesses."""
    local_addr: str | None = None
    """This node's name as the cluster knows it (Slurm's node name). torch identifies a node by
    (hostname, pid): two containers on ``--network host`` both see the daemon's hostname and,
    each with its own PID namespace, the same pid, so the rendezvous takes them for one node
    and waits forever; the node name also becomes the address the other nodes' ranks reach."""


def rdzv_port(job_id: str) -> int:
    """A port in 20000-29999 (below Linux's ephemeral range) derived from the Slurm job id.

    Jobs sharing a node (array elements, or the "nodes" of a one-machine test cluster) get
    different ports; a requeued job keeps its id and therefore its port.
    """
    digits = "".join(ch for ch in job_id.split("_")[0] if ch.isdigit())
    number = int(digits) if digits else sum(map(ord, job_id))
    return 20000 + number % 10000


def train_argv(config_path: str, run_name: str) -> list[str]:
    """What each rank runs (after ``python -m glamhpc``)."""
    return ["train", config_path, "--run-name", run_name]


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
    # torchrun itself, minus the traceback it prints when a Slurm signal stops it.
    argv = [python, "-m", "glamhpc.distributed.torchrun_main", f"--nnodes={nnodes}"]
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
        if rendezvous.is_host is not None:
            argv.append(f"--rdzv-conf=is_host={str(rendezvous.is_host).lower()}")
        if rendezvous.local_addr:
            argv.append(f"--local-addr={rendezvous.local_addr}")
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


def agent_env(base: Mapping[str, str], extra: Mapping[str, str], threads: int) -> dict[str, str]:
    """The agent's environment: ``base`` + ``extra`` + what the ranks need; OMP threads shared
    between the node's ranks (unless set) instead of each rank using every CPU."""
    env = {**base, **extra, **RANK_ENV}
    env.setdefault("OMP_NUM_THREADS", str(max(1, threads)))
    return env


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


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[glamhpc launch {stamp}] {message}", flush=True)


class AgentProcess:
    """A running torchrun agent, in its own session: its processes can be signalled as a group
    and waited for as a set, even after the agent has exited before its ranks."""

    def __init__(self, argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), start_new_session=True)
        self.exit_code: int | None = None

    def forward(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def reap(self) -> bool:
        """Collect the agent's exit status without blocking; True once it has exited.

        os.waitpid, not Popen.wait: this also runs inside signal handlers while the main code
        may be in the middle of a wait, and Popen.wait's lock is not reentrant.
        """
        if self.exit_code is not None:
            return True
        try:
            pid, status = os.waitpid(self.proc.pid, os.WNOHANG)
        except ChildProcessError:
            return self.exit_code is not None
        if pid == 0:
            return False
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.exit_code  # keeps Popen.__del__ quiet
        return True

    def wait(self) -> int:
        while not self.reap():
            time.sleep(0.2)
        assert self.exit_code is not None
        return self.exit_code

    def drain(self, timeout_s: float) -> bool:
        """Wait until the agent and every rank it started have exited; False on timeout.

        A second signal can make the agent exit before its ranks; a checkpoint is complete only
        when the ranks are gone, so they are waited for too.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.reap()
            if self.exit_code is not None and not session_processes(self.proc.pid):
                return True
            time.sleep(0.2)
        log(f"ranks still running {timeout_s:.0f}s after the signal; continuing anyway")
        return False


@contextlib.contextmanager
def forwarding(
    agent: AgentProcess,
    signals: Sequence[int],
    translate: Mapping[int, int] | None = None,
    *,
    forward: bool = True,
) -> Iterator[list[int]]:
    """Catch ``signals`` in this process and forward them to the agent (``translate`` maps a
    signal to the one sent instead); yields the list of signals received so far.

    ``forward=False`` only records them: inside a Slurm step, Slurm itself signals every process
    of the step, the agent included, and a second copy could cut the agent's graceful shutdown
    of its ranks short.
    """
    received: list[int] = []
    previous = {}
    table = dict(translate or {})

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if forward:
            agent.forward(table.get(signum, signum))

    for sig in signals:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
