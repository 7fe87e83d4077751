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
    assert argv[:3] == ["py", "-m", "glamhpc.distributed.torchrun_main"]
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
    assert not any(a.startswith("--rdzv-conf") for a in argv)  # torch guesses who hosts
    hosting = Rendezvous("n1", 21234, "glamhpc-7", is_host=True)
    assert "--rdzv-conf=is_host=true" in torchrun_argv(
        train_argv=TRAIN, nnodes=2, nproc_per_node=1, rendezvous=hosting, log_dir="/r"
    )
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
    job._agent = object()  # type: ignore[assignment]
    job._signal = signal.SIGUSR2
    clone = pickle.loads(pickle.dumps(job))
    assert clone.resources == job.resources
    assert clone._agent is None and clone._signal is None


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


def _slurm_env(monkeypatch: pytest.MonkeyPatch, node: int) -> None:
    """The variables Slurm sets in a 2-node job's second task (what JobEnvironment reads)."""
    for key, value in {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4321",
        "SLURM_JOB_NODELIST": "n[1-2]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": str(node),
        "SLURM_PROCID": str(node),
        "SLURM_LOCALID": "0",
        "SLURM_NTASKS": "2",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)


def _spec(tmp_path) -> RunSpec:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "runs" / "e" / "r"
    return RunSpec(
        str(run_dir / "launch" / "config.yaml"),
        "r",
        str(run_dir),
        str(tmp_path),
        str(run_dir / "launch" / "torchrun"),
        env={"GLAMHPC_RUN_TAGS": '{"a": "b"}'},
    )


def test_node_command_from_a_real_slurm_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import submitit

    _slurm_env(monkeypatch, node=1)
    cfg = load_config(None, ["launch.executor=slurm", "launch.nodes=2", "env.num_envs=2"])
    job = TorchrunJob(resolve(cfg))
    argv = job.node_argv(_spec(tmp_path), submitit.JobEnvironment())
    assert f"--rdzv-endpoint=n1:{rdzv_port('4321')}" in argv  # the FIRST node hosts the store
    # ... and says so: a container's hostname is not the node's (docker --network host).
    assert "--rdzv-conf=is_host=false" in argv
    # ... and names itself: containers on one host network share a hostname and a pid.
    assert "--local-addr=n2" in argv
    assert "--rdzv-id=glamhpc-4321" in argv and "--nnodes=2" in argv
    assert any(a.startswith("--log-dir=") and a.endswith("4321-node1") for a in argv)
    assert argv[0] == sys.executable
    env = job.rank_env(_spec(tmp_path))
    assert env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] == "[rank${rank}]:"
    assert env["GLAMHPC_RUN_TAGS"] == '{"a": "b"}'
    # A restarted worker group must not read the previous attempt's store keys.
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"


def test_node_command_inside_a_container(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import submitit

    _slurm_env(monkeypatch, node=0)
    cfg = load_config(
        None, ["launch.executor=slurm", "launch.container=/images/glamhpc.sif", "env.num_envs=2"]
    )
    argv, env = TorchrunJob(resolve(cfg)).node_command(_spec(tmp_path), submitit.JobEnvironment())
    assert argv[:2] == ["apptainer", "exec"] and "--cleanenv" in argv
    assert "/images/glamhpc.sif" in argv
    inner = argv[argv.index("/images/glamhpc.sif") + 1 :]
    assert inner[:3] == ["python3", "-m", "glamhpc.distributed.torchrun_main"]
    binds = argv[argv.index("--bind") + 1]
    assert f"{tmp_path}:{tmp_path}" in binds.split(",")  # the working dir, at the same path
    # Variables reach the container through the engine's environment, never its argv.
    assert "--env" not in argv
    assert env["APPTAINERENV_GLAMHPC_RUN_TAGS"] == '{"a": "b"}'
    assert env["APPTAINERENV_TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] == "[rank${rank}]:"
    assert env["APPTAINERENV_SLURM_JOB_ID"] == env["SLURM_JOB_ID"]
