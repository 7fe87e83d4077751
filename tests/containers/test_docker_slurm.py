"""A 2-node `glamhpc submit --container IMAGE` job on the real local Slurm cluster, every node's
agent and ranks running inside the real Docker image (the Docker tier, see test_docker_build.py).

Nothing is a stand-in here: sbatch, submitit, torchrun, the Docker engine and the image built
from the repository's Dockerfile are real. Evidence that the ranks really ran in the image:
- the engine's own event log: one container of exactly this image id started per node during the
  job, and each exited 0;
- what the trainer saw from inside: the MLflow run's `container.build` tag is read from
  /etc/glamhpc-image, which only images `glamhpc build` made hold (version and commit of this
  build), `container.detected` from the `/.dockerenv` the engine puts in every container, and
  `container.image_id` is the id the node's launcher resolved for the image;
- torchrun's rank prefixes of both nodes in the node logs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from glamhpc import __version__

from .conftest import ROOT, VENV_BIN, BuiltImage, docker, docker_env
from .test_slurm_container import _wait_for, cluster  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1500)]


def test_two_node_slurm_job_runs_inside_the_docker_image(
    cluster: None,  # noqa: F811
    docker_image: BuiltImage,
    tmp_path: Path,
) -> None:
    # The marker only images built by `glamhpc build` have (this host may itself be a container).
    assert not Path("/etc/glamhpc-image").exists(), "the test itself must run on the host"
    env = {
        k: v
        for k, v in docker_env().items()
        if not k.startswith(("SLURM_", "MLFLOW_", "GLAMHPC_", "APPTAINER"))
    }
    env.update(
        {
            "PATH": os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),
            "GLAMHPC_CACHE": str(tmp_path / "cache"),
            "GLAMHPC_STATE_DIR": str(tmp_path / "state"),
            "HF_HUB_OFFLINE": "1",
        }
    )
    glamhpc = [sys.executable, "-m", "glamhpc"]
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

    since = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    submitted = subprocess.run(
        [*glamhpc, "submit", "cfg.yaml", "--executor", "slurm", "--nodes", "2",
         "--nproc-per-node", "1", "--cpus-per-task", "2", "--time", "15",
         "--container", docker_image.tag, "--run-name", "in-docker"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.split("submitted job ")[1].split()[0]
    run_dir = tmp_path / "runs" / config["name"] / "in-docker"
    try:
        _wait_for(run_dir / "DONE", 900, run_dir)
    except BaseException:  # a failed job must not hold the cluster's nodes for later tests
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30, check=False)
        raise

    # The engine's record: one container of this image started per node, and each exited 0
    # (DONE is written by rank 0 before the agents and their containers exit: wait for both).
    deadline = time.monotonic() + 120
    while True:
        until = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
        events = docker(
            "events", "--since", since, "--until", until, "--filter", "type=container",
            "--format", "{{json .}}",
        ).stdout.splitlines()  # fmt: skip
        records = [json.loads(line) for line in events if line.strip()]
        ours = [r for r in records if r["Actor"]["Attributes"].get("image") == docker_image.tag]
        starts = [r for r in ours if r["Action"] == "start"]
        dies = [r for r in ours if r["Action"] == "die"]
        if len(dies) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert len(starts) == 2, [r["Action"] for r in ours]
    assert [r["Actor"]["Attributes"].get("exitCode") for r in dies] == ["0", "0"]
    assert all(
        docker("inspect", "--format", "{{.Image}}", r["id"], check=False).returncode != 0
        for r in starts
    ), "containers are run with --rm"

    # What the trainer saw from inside the container.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    tags = client.get_run(run_id).data.tags
    assert tags["container.build"] == f"glamhpc {__version__} {docker_image.revision}"
    assert tags["container.detected"] == "docker"
    assert tags["container.image"] == docker_image.tag
    assert tags["container.image_id"] == docker_image.image_id
    assert tags["glamhpc.hosts"] == "n[1-2]", tags.get("glamhpc.hosts")

    # One rank per node trained in one process group: rank 0's progress lines in node 0's log,
    # a world of 2 in the run's tags, and each node's agent kept its rank's own log.
    logs = "\n".join(p.read_text(errors="replace") for p in (run_dir / "launch").rglob("*.out"))
    assert "[rank0]:update 2/2" in logs, logs[-3000:]
    assert tags["world_size"] == "2"
    for node in (0, 1):
        agent_logs = run_dir / "launch" / "torchrun" / f"{job_id}-node{node}"
        assert len(list(agent_logs.glob("*/attempt_0/0"))) == 1, node
