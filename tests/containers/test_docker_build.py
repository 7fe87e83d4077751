"""The Docker tier: the real Dockerfile built by a real Docker engine, and commands run in it.

Needs a Docker daemon and the locally made base image (`sh tests/containers/docker_tier.sh up`:
Debian minbase + Python + the local CPU torch wheel, standing in for pytorch/pytorch, which no
registry can serve here). CI brings both up and requires the tier (GLAMHPC_DOCKER_TESTS=1
GLAMHPC_REQUIRE_DOCKER=1); elsewhere it is opt-in and skipped with the reason. The build installs
the pinned set from PyPI inside the image (minutes the first time; Docker's layer cache makes
reruns fast). The 2-node Slurm job in the image is tests/containers/test_docker_slurm.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from glamhpc import containers as c

from .conftest import DOCKER_BASE as BASE
from .conftest import ROOT, BuiltImage
from .conftest import docker as _docker
from .conftest import docker_env as _docker_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def image(docker_image: BuiltImage) -> str:
    return docker_image.tag


def test_entrypoint_is_glamhpc(image: str) -> None:
    out = _docker("run", "--rm", image, "--version").stdout
    assert out.strip() == f"glamhpc {c.__version__}"


def test_base_torch_is_kept_and_user_is_not_root(image: str) -> None:
    probe = "import os, torch; print(torch.__version__, os.getuid(), os.environ['HF_HOME'])"
    inside = _docker("run", "--rm", "--entrypoint", "python", image, "-c", probe).stdout.split()
    base = _docker("run", "--rm", "--entrypoint", "python", BASE, "-c", probe.split(";")[0] + "; "
                   "print(torch.__version__)").stdout.split()  # fmt: skip
    assert inside[0] == base[0]  # install.sh did not swap the base image's torch
    assert inside[1] == "10001" and inside[2] == c.IMAGE_MODEL_CACHE


def test_oci_labels(docker_image: BuiltImage) -> None:
    image = docker_image.tag
    labels = json.loads(
        _docker("image", "inspect", "--format", "{{json .Config.Labels}}", image).stdout
    )
    assert labels["org.opencontainers.image.version"] == c.__version__
    assert labels["org.opencontainers.image.revision"] == docker_image.revision
    assert len(docker_image.revision.split("-")[0]) == 40  # a real commit, not "unknown"
    assert labels["org.opencontainers.image.base.name"] == BASE
    assert labels["io.glamhpc.baked-model"] == "none"


def test_a_job_trains_inside_the_image(image: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "configs" / "quickstart.yaml", work / "quickstart.yaml")
    inner = [
        "glamhpc", "train", "quickstart.yaml", "--run-name", "docker",
        "--set", "env.num_envs=4", "--set", "ppo.steps_per_env=8", "--set", "ppo.minibatch_size=16",
        "--set", "train.max_updates=2", "--set", "train.progress=false",
    ]  # fmt: skip
    env = c.forwarded_env(
        {},
        extra={"GLAMHPC_CACHE": str(work / "cache"), "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"},
    )
    cmd = c.wrap_command(
        inner,
        image,
        binds=[str(work)],
        env=env,
        workdir=str(work),
        user=f"{os.getuid()}:{os.getgid()}",
    )
    # `--env NAME` copies the value from the docker client's environment.
    engine_env = {**_docker_env(), **c.engine_env(env, "docker")}
    result = subprocess.run(cmd, env=engine_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = list((work / "runs").glob("*/docker"))
    assert len(runs) == 1 and (runs[0] / "DONE").exists(), result.stdout[-2000:]
    assert (work / "mlflow.db").exists()


def test_doctor_runs_inside_the_image(image: str) -> None:
    """`glamhpc doctor` in the image: the checks a job's node would run, from inside."""
    result = _docker("run", "--rm", image, "doctor", check=False)
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out[-3000:]
    assert result.returncode == 0 and out.rstrip().endswith("ready"), out[-3000:]
    assert "python" in out and "HF_HUB_OFFLINE=1" in out, out[-3000:]


def test_doctor_container_validates_the_real_image(docker_image: BuiltImage) -> None:
    """The site's validation recipe (docs/CONTAINERS.md) against the real image and engine:
    labels, entrypoint, and a training smoke run inside it without network."""
    done = subprocess.run(
        [sys.executable, "-m", "glamhpc", "doctor", "--container", docker_image.tag, "--json"],
        env=_docker_env(), capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    for step in ("labels", "entrypoint", "smoke"):
        assert checks[f"image {step}"]["status"] == "ok", (checks[f"image {step}"], done.stderr)
    assert checks["image labels"]["detail"] == (
        f"glamhpc {c.__version__}, commit {docker_image.revision[:12]}"
    )
    assert checks["image entrypoint"]["detail"] == f"glamhpc {c.__version__}"
    assert "resume_exact=1" in checks["image smoke"]["detail"]
    print(done.stderr)  # the three commands, for the docs
    print("\n".join(f"{k}: {v['detail']}" for k, v in checks.items() if k.startswith("image ")))
