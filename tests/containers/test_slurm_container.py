"""A 2-rank job on the real local Slurm cluster, run through the container wrapper, trains.

`glamhpc submit --executor slurm --container IMAGE` on the cluster that slurm/cluster.sh brings
up (`glamhpc cluster up`): sbatch, submitit and torchrun are real; only `apptainer` is the
stand-in from tests/bin (it applies --cleanenv/APPTAINERENV_* and execs the command), because
Apptainer cannot be installed here. The job inherits the submitter's PATH (sbatch
--export=ALL), so the node finds the stand-in, as it would find a site's `apptainer` module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, STANDINS, VENV_BIN, read_log

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]


def _no_cluster_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "no Slurm client on PATH (glamhpc cluster install && glamhpc cluster up)"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        return "sinfo timed out: the Slurm controller is not answering"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed") for s in states):
        return "no Slurm cluster with an idle node (glamhpc cluster up)"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    pytest.importorskip("glamhpc.launch", reason="glamhpc.launch (Slurm dispatch) not present")
    reason = _no_cluster_reason()
    if reason is None:
        return
    if os.environ.get("GLAMHPC_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _wait_for(path: Path, timeout_s: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout_s
    failed = False
    while time.monotonic() < deadline and not failed:
        if path.exists():
            return
        time.sleep(2)
        # submitit writes this line when the job's function raised: no need to wait longer.
        failed = any(
            "triggered an exception" in log.read_text(errors="replace")
            for log in logs.rglob("*_log.*")
        )
    tails = [
        f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        for log in sorted(logs.rglob("*.out")) + sorted(logs.rglob("*.err"))
    ]
    why = "the job failed" if failed else f"{path} did not appear within {timeout_s:.0f} s"
    pytest.fail(why + "\n" + "\n".join(tails))


def test_two_rank_slurm_job_trains_inside_the_container(cluster: None, tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "MLFLOW_", "GLAMHPC_", "APPTAINER"))
    }
    env.update(
        {
            "PATH": os.pathsep.join([str(STANDINS), str(VENV_BIN), env.get("PATH", "")]),
            "GLAMHPC_STANDIN_LOG": str(tmp_path / "standin.log"),
            "GLAMHPC_CACHE": str(tmp_path / "cache"),
            "GLAMHPC_STATE_DIR": str(tmp_path / "state"),
            "HF_HUB_OFFLINE": "1",
        }
    )
    glamhpc = [sys.executable, "-m", "glamhpc"]
    image = tmp_path / "glamhpc.sif"
    built = subprocess.run(
        [*glamhpc, "build", "--engine", "apptainer", "--tag", str(image)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr

    # As on a cluster: the model is prepared on the login node, before the job (two ranks
    # building tiny-t5 into an empty cache at once is the trainer's business, not this test's).
    prefetch = subprocess.run(
        [*glamhpc, "models", "prefetch", "tiny-t5", "--cache", env["GLAMHPC_CACHE"]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert prefetch.returncode == 0, prefetch.stderr

    config = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    config["env"].update({"num_envs": 4})
    config["ppo"].update({"steps_per_env": 8, "minibatch_size": 16})
    config["train"] = {"run_root": str(tmp_path / "runs"), "max_updates": 2, "progress": False}
    config["tracking"] = {"uri": f"sqlite:///{tmp_path}/mlflow.db"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))

    submitted = subprocess.run(
        [*glamhpc, "submit", "cfg.yaml", "--executor", "slurm", "--nproc-per-node", "2",
         "--cpus-per-task", "2", "--time", "10", "--container", str(image),
         "--run-name", "in-container"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_dir = tmp_path / "runs" / config["name"] / "in-container"
    _wait_for(run_dir / "DONE", 420, run_dir)

    # The node's command went through the (stand-in) apptainer with the launcher's environment.
    calls = [c["argv"] for c in read_log(tmp_path / "standin.log") if c["argv"][0] == "exec"]
    assert len(calls) == 1, calls
    argv = calls[0]
    assert argv[:2] == ["exec", "--cleanenv"]
    # Variables travel as APPTAINERENV_* (the job trained with the cache and Slurm's ids it
    # needs from them), never as values on the argv the node log and `ps` show.
    assert "--env" not in argv
    cache = str(tmp_path / "cache")
    assert f"{cache}:{cache}" in argv[argv.index("--bind") + 1].split(",")
    assert str(tmp_path) in argv[argv.index("--bind") + 1].split(",")[0]
    inner = argv[argv.index(str(image)) + 1 :]
    assert inner[1:3] == ["-m", "glamhpc.distributed.torchrun_main"]
    assert "--nproc-per-node=2" in inner

    # Both ranks trained: rank 0 reported its updates, and the run is tracked.
    logs = "\n".join(p.read_text(errors="replace") for p in (run_dir / "launch").rglob("*.out"))
    assert "[rank0]:update 2/2" in logs, logs[-3000:]
    # Rank 1 prints nothing on a healthy run; torchrun kept a log folder per local rank.
    attempt = list((run_dir / "launch" / "torchrun").glob("*-node0/*/attempt_0"))
    assert len(attempt) == 1 and {p.name for p in attempt[0].iterdir()} == {"0", "1"}
    assert (run_dir / "mlflow_run_id").exists()
