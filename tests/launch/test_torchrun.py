"""The per-node command and the node callable's process handling (no Slurm needed)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import pytest

from glamhpc.config import load_config
from glamhpc.launch.resources import resolve
from glamhpc.launch.torchrun import (
    AGENT_SIGNALS,
    Rendezvous,
    RunSpec,
    TorchrunJob,
    rank_prefix,
    rdzv_port,
    session_processes,
    torchrun_argv,
)

TRAIN = ["train", "/r/launch/config.yaml", "--run-name", "r"]


def test_single_node_is_standalone() -> None:
    argv = torchrun_argv(
        train_argv=TRAIN,
        nnodes=1,
        nproc_per_node=2,
        rendezvous=None,
        log_dir="/r/logs",
        python="py",
    )
    assert argv[:3] == ["py", "-m", "torch.distributed.run"]
    assert "--standalone" in argv and not any(a.startswith("--rdzv") for a in argv)
    assert "--nproc-per-node=2" in argv and "--nnodes=1" in argv
    # The rank command is exactly `glamhpc train ...`, after torchrun's own options.
    assert argv[-6:] == ["-m", "glamhpc", *TRAIN]


def test_multi_node_uses_c10d_on_the_first_node_and_survives_usr2() -> None:
    argv = torchrun_argv(
        train_argv=TRAIN,
        nnodes=2,
        nproc_per_node=4,
        rendezvous=Rendezvous("n1", 21234, "glamhpc-7"),
        log_dir="/r/logs",
        max_restarts=2,
        shutdown_timeout_s=50,
    )
    assert "--rdzv-backend=c10d" in argv
    assert "--rdzv-endpoint=n1:21234" in argv and "--rdzv-id=glamhpc-7" in argv
    assert "--standalone" not in argv
    assert f"--signals-to-handle={AGENT_SIGNALS}" in argv and "SIGUSR2" in AGENT_SIGNALS
    assert "--shutdown-timeout=50" in argv and "--max-restarts=2" in argv
    assert "--tee=3" in argv and "--log-dir=/r/logs" in argv


@pytest.mark.parametrize(("job", "port"), [("7", 20007), ("12345_3", 22345), ("99999", 29999)])
def test_rendezvous_port_from_job_id(job: str, port: int) -> None:
    assert rdzv_port(job) == port
    assert 20000 <= rdzv_port("local-abc") < 30000


def test_rank_prefix_matches_torchrun_template() -> None:
    assert rank_prefix(3) == "[rank3]:"


def test_job_pickles_without_process_state() -> None:
    job = TorchrunJob(resolve(load_config(None, [])))
    job._proc = object()
    job._signal = signal.SIGUSR2
    clone = pickle.loads(pickle.dumps(job))
    assert clone.resources == job.resources
    assert clone._proc is None and clone._signal is None and clone._exit_code is None


def test_run_spec_train_argv() -> None:
    spec = RunSpec("/c.yaml", "name", "/runs/x/name", "/w", "/runs/x/name/launch/torchrun")
    assert spec.train_argv() == ["train", "/c.yaml", "--run-name", "name"]
    assert spec.requeues == 0 and spec.env == {}


def test_session_processes_sees_orphans_until_they_exit() -> None:
    # A session leader whose child outlives it: what a torchrun agent and its ranks look like
    # after the agent exits first. The launcher must keep waiting for the orphan.
    child = "import time; time.sleep(1.5)"
    script = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {child!r}])"
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    leader.wait(timeout=30)
    assert session_processes(leader.pid), "the orphaned child is still in the session"
    deadline = time.monotonic() + 30
    while session_processes(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_processes(leader.pid) == []
    assert session_processes(os.getsid(0)) != []  # this test's own session is not empty
