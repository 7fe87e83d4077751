"""Container jobs: values by name, Docker as the calling user with the Slurm allocation's GPUs.

What `glamhpc submit --container` runs on a node (``glamhpc.containers.job_command``), executed
through the stand-in engines of tests/bin, which record their argv (as a node log and `ps` would
show it) and apply the engines' environment rules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glamhpc import containers as c

ROOT = Path(__file__).resolve().parents[2]
PRINT_ENV = ["python", "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
SECRET = "pw-5e1f 'quoted' $x"


@pytest.fixture
def host(tmp_path: Path) -> dict[str, str]:
    """A compute node's environment inside a Slurm step with GPUs 1 and 3 and a secret."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GLAMHPC_", "APPTAINER", "SINGULARITY", "DOCKER", "MLFLOW_"))
    }
    env.update(
        {
            "PATH": os.pathsep.join(
                [str(ROOT / "tests" / "bin"), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
            ),
            "GLAMHPC_STANDIN_LOG": str(tmp_path / "standin.log"),
            "GLAMHPC_STANDIN_STATE": str(tmp_path / "standin-state"),
            "MLFLOW_TRACKING_PASSWORD": SECRET,
            "SLURM_STEP_GPUS": "1,3",
            "CUDA_VISIBLE_DEVICES": "0,1",
        }
    )
    return env


def _calls(tmp_path: Path, command: str) -> list[list[str]]:
    log = tmp_path / "standin.log"
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e["argv"] for e in entries if e["argv"][0] == command]


def _inside(job: c.ContainerJob) -> dict[str, str]:
    out = subprocess.run(job.argv, env=job.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_docker_job_runs_as_the_caller_on_the_allocated_gpus(
    tmp_path: Path, host: dict[str, str]
) -> None:
    build = c.build_command("docker", tag="glamhpc:test")
    built = subprocess.run(build, cwd=ROOT, env=host, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    job = c.job_command(PRINT_ENV, "glamhpc:test", environ=host, binds=[str(tmp_path)], gpus=True)
    inside = _inside(job)
    assert inside["MLFLOW_TRACKING_PASSWORD"] == SECRET
    assert "CUDA_VISIBLE_DEVICES" not in inside  # the engine numbers the chosen GPUs from 0
    (argv,) = _calls(tmp_path, "run")
    assert SECRET not in json.dumps(argv) and "MLFLOW_TRACKING_PASSWORD" in argv
    assert argv[argv.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert argv[argv.index("--gpus") + 1] == '"device=1,3"'
    assert "all" not in argv


@pytest.mark.parametrize("engine", ["apptainer", "singularity"])
def test_apptainer_job_gets_values_through_its_environment(
    tmp_path: Path, host: dict[str, str], engine: str
) -> None:
    image = tmp_path / "glamhpc.sif"
    build = c.build_command("apptainer", tag=str(image))
    built = subprocess.run(build, cwd=ROOT, env=host, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    job = c.job_command(PRINT_ENV, str(image), environ=host, binds=[str(tmp_path)], gpus=True)
    if engine == "singularity":
        job = c.ContainerJob(
            ["singularity", *job.argv[1:]],
            {**host, **c.engine_env(c.forwarded_env(host), "singularity")},
        )
    inside = _inside(job)
    assert inside["MLFLOW_TRACKING_PASSWORD"] == SECRET
    # Apptainer runs in the job's cgroup: Slurm's CUDA_VISIBLE_DEVICES is the right one there.
    assert inside["CUDA_VISIBLE_DEVICES"] == "0,1"
    (argv,) = _calls(tmp_path, "exec")
    assert SECRET not in json.dumps(argv) and "--env" not in argv and "--nv" in argv
