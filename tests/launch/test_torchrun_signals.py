"""A Slurm signal stopping torchrun reads as a stop, not a crash: one line, no traceback.

The agent command is the one every launcher builds (agent.torchrun_argv); its rank is a small
script that, like the trainer, saves on the signal and exits 0. The signal goes to the agent's
whole process group, as Slurm delivers it to every process of a job step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glamhpc.launch.agent import RANK_ENV, torchrun_argv

RANK = """
import signal, sys, time
from pathlib import Path
stop = []
signal.signal(signal.SIGUSR2, lambda *_: stop.append(1))
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
Path(sys.argv[1]).write_text("ready")
while not stop:
    time.sleep(0.05)
time.sleep(0.5)  # "saving"
print("rank saved", flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signals", [(signal.SIGUSR2,), (signal.SIGTERM, signal.SIGUSR2)])
def test_signal_stops_torchrun_without_a_traceback(
    tmp_path: Path, signals: tuple[int, ...]
) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    ready = tmp_path / "ready"
    argv = torchrun_argv(
        train_argv=[],
        nnodes=1,
        nproc_per_node=1,
        rendezvous=None,
        log_dir=str(tmp_path / "logs"),
        shutdown_timeout_s=20,
    )
    # The rank runs the script instead of `-m glamhpc train ...` (model loading takes long).
    argv = [*argv[: argv.index("-m", 3)], str(script), str(ready)]
    env = {**os.environ, **RANK_ENV, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the rank never started"
            time.sleep(0.1)
        for sig in signals:
            os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    both = out + err
    assert "rank saved" in both
    assert "Traceback" not in both and "SignalException" not in both, both[-3000:]
    name = signal.Signals(signals[-1]).name if len(signals) == 1 else ""
    assert f"torchrun stopped its ranks on {name}" in out
    from glamhpc.distributed.torchrun_main import SIGNALLED_EXIT

    assert proc.returncode == SIGNALLED_EXIT


def test_the_agent_is_torchrun_behind_glamhpcs_entry_point() -> None:
    argv = torchrun_argv(
        train_argv=["train", "c.yaml"], nnodes=1, nproc_per_node=1, rendezvous=None, log_dir="l"
    )
    assert argv[:3] == [sys.executable, "-m", "glamhpc.distributed.torchrun_main"]
