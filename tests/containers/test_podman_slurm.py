"""A 2-node `glamhpc submit --container IMAGE` job on the real local Slurm cluster whose agents and
ranks run under podman, in the image `glamhpc build --engine podman` made (the Podman tier, see
test_podman.py). The Docker twin is test_docker_slurm.py.

Nothing is a stand-in: sbatch, submitit, torchrun, podman and the image are real. The job picks
podman because the submitter's environment says GLAMHPC_CONTAINER_ENGINE=podman (sbatch
--export=ALL carries it, and the tier's CONTAINERS_CONF/CONTAINERS_STORAGE_CONF, to the nodes;
this machine has a docker CLI too). Evidence that the ranks ran in the image under podman:
- podman's own event log: one container of exactly this image started per node during the job,
  and each died with exit code 0;
- what the trainer saw from inside: `container.build` read from /etc/glamhpc-image (only images
  `glamhpc build` made hold it), `container.detected` = podman from the /run/.containerenv that
  podman puts in every container, `container.image_id` = the id podman gave this build.
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

from .conftest import ROOT, VENV_BIN, BuiltImage, podman, podman_env
from .test_slurm_container import _wait_for, cluster  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1500)]


def _events(since: str, image: BuiltImage) -> list[dict]:
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = podman(
        "events", "--since", since, "--until", until, "--filter", "type=container",
        "--format", "{{json .}}",
    ).stdout  # fmt: skip
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    # podman names a short tag by its registry: glamhpc:podman-tier is localhost/glamhpc:...
    return [r for r in records if r.get("Image") in (image.tag, f"localhost/{image.tag}")]


def test_two_node_slurm_job_runs_inside_the_podman_image(
    cluster: None,  # noqa: F811
    podman_image: BuiltImage,
    tmp_path: Path,
) -> None:
    assert not Path("/etc/glamhpc-image").exists(), "the test itself must run on the host"
    env = {
        k: v
        for k, v in podman_env().items()
        if not k.startswith(("SLURM_", "MLFLOW_", "APPTAINER"))
        and (not k.startswith("GLAMHPC_") or k == "GLAMHPC_CONTAINER_ENGINE")
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

    since = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    submitted = subprocess.run(
        [*glamhpc, "submit", "cfg.yaml", "--executor", "slurm", "--nodes", "2",
         "--nproc-per-node", "1", "--cpus-per-task", "2", "--time", "15",
         "--container", podman_image.tag, "--run-name", "in-podman"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.split("submitted job ")[1].split()[0]
    run_dir = tmp_path / "runs" / config["name"] / "in-podman"
    try:
        _wait_for(run_dir / "DONE", 900, run_dir)
    except BaseException:  # a failed job must not hold the cluster's nodes for later tests
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30, check=False)
        raise

    # podman's record: one container of this image started per node, each died with exit 0
    # (rank 0 writes DONE before the agents and their containers exit: wait for both).
    deadline = time.monotonic() + 120
    while True:
        ours = _events(since, podman_image)
        starts = [r for r in ours if r["Status"] == "start"]
        died = [r for r in ours if r["Status"] == "died"]
        if len(died) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert len(starts) == 2, [r["Status"] for r in ours]
    # The exit code is left out of the record when it is 0.
    assert [r.get("ContainerExitCode", 0) for r in died] == [0, 0], died
    assert sum(r["Status"] == "remove" for r in ours) == 2, "containers are run with --rm"

    # What the trainer saw from inside the container.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    tags = client.get_run(run_id).data.tags
    assert tags["container.build"] == f"glamhpc {__version__} {podman_image.revision}"
    assert tags["container.detected"] == "podman"
    assert tags["container.image"] == podman_image.tag
    assert tags["container.image_id"] == "sha256:" + podman_image.image_id
    assert tags["glamhpc.hosts"] == "n[1-2]", tags.get("glamhpc.hosts")

    # One rank per node in one process group: rank 0's progress lines, a world of 2, and each
    # node's agent kept its rank's own log; the node logs show the podman command they ran.
    logs = "\n".join(p.read_text(errors="replace") for p in (run_dir / "launch").rglob("*.out"))
    assert "[rank0]:update 2/2" in logs, logs[-3000:]
    for node in ("node 1/2 on n1", "node 2/2 on n2"):
        assert f"{node}, attempt 1: podman run --rm" in logs, node
    assert tags["world_size"] == "2"
    for node in (0, 1):
        agent_logs = run_dir / "launch" / "torchrun" / f"{job_id}-node{node}"
        assert len(list(agent_logs.glob("*/attempt_0/0"))) == 1, node
