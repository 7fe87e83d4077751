"""Wrapped commands really run: stand-in engines on PATH execute what wrap_command builds.

The stand-ins apply the engines' environment rules (``--cleanenv`` drops the host's variables,
``docker run`` never passes them, ``--env`` is applied last) and exec the inner command, so
these tests show that a job gets exactly the launcher's variables, and that a 2-rank torchrun
inside the wrapper forms a process group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from glamhpc import containers as c

from .conftest import ROOT, read_log

PRINT_ENV = [
    "python",
    "-c",
    "import json, os; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))",
]


def _sif(tmp_path: Path, env: dict[str, str]) -> Path:
    """Build a stand-in SIF from the project's .def with the stand-in apptainer."""
    out = tmp_path / "glamhpc.sif"
    cmd = c.build_command("apptainer", tag=str(out))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def _run(cmd: list[str], env: dict[str, str]) -> dict:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_apptainer_job_sees_only_what_is_passed(tmp_path: Path, standin_env: dict) -> None:
    image = _sif(tmp_path, standin_env)
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    host = {
        **standin_env,
        "MASTER_ADDR": "n1",
        "MASTER_PORT": "29500",
        "SLURM_JOB_ID": "42",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "HF_HUB_OFFLINE": "1",
        "CONDA_PREFIX": "/home/u/conda",  # must not leak into the container
        "PYTHONPATH": "/home/u/src",
    }
    tricky = "a b=c 'd' \"e\" $f ,g"
    env = c.forwarded_env(host, extra={"GLAMHPC_NOTE": tricky})
    cmd = c.wrap_command(PRINT_ENV, str(image), binds=[str(run_dir)], env=env, workdir=str(run_dir))
    assert tricky not in cmd and "--env" not in cmd  # values travel in the environment only
    seen = _run(cmd, {**host, **c.engine_env(env, "apptainer")})
    inside = seen["env"]
    for key, value in env.items():
        assert inside[key] == value, key
    assert "CONDA_PREFIX" not in inside and "PYTHONPATH" not in inside
    assert "GLAMHPC_STANDIN_STATE" in env  # GLAMHPC_* is forwarded on purpose
    assert inside["HF_HOME"] == "/models"  # the image's default, not overridden
    assert seen["cwd"] == str(run_dir)
    (call,) = [e for e in read_log(tmp_path / "standin.log") if e["argv"][0] == "exec"]
    assert [call["engine"], *call["argv"]] == cmd


def test_apptainer_refuses_a_missing_bind_and_warns_without_gpus(
    tmp_path: Path, standin_env: dict
) -> None:
    image = _sif(tmp_path, standin_env)
    cmd = c.wrap_command(["true"], str(image), binds=[str(tmp_path / "absent")])
    result = subprocess.run(cmd, env=standin_env, capture_output=True, text=True)
    assert result.returncode != 0 and "mount source" in result.stderr
    cmd = c.wrap_command(["true"], str(image), gpus=True)
    env = {**standin_env, "PATH": standin_env["PATH"].replace(str(ROOT / "tests" / "bin"), "")}
    env["PATH"] = f"{tmp_path / 'nogpu'}:{env['PATH']}"
    (tmp_path / "nogpu").mkdir()
    os.symlink(ROOT / "tests" / "bin" / "apptainer", tmp_path / "nogpu" / "apptainer")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert result.returncode == 0
    assert "Could not find any nv files" in result.stderr


def test_env_binds_cover_forwarded_folders(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    env = {
        "HF_HOME": str(hf),
        "GLAMHPC_CACHE": "relative/cache",
        "TMPDIR": str(tmp_path / "missing"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
    }
    assert c.env_binds(env) == [str(hf), str(tmp_path)]
    assert c.env_binds({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}) == []


def test_docker_job_runs_with_the_image_environment(tmp_path: Path, standin_env: dict) -> None:
    build = c.build_command("docker", tag="glamhpc:test")
    result = subprocess.run(build, cwd=ROOT, env=standin_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "were not consumed" not in result.stdout
    host = {**standin_env, "RANK": "0", "CONDA_PREFIX": "/x"}
    env = c.forwarded_env(host)
    cmd = c.wrap_command(PRINT_ENV, "glamhpc:test", binds=[str(tmp_path)], env=env, gpus=True)
    inside = _run(cmd, host)["env"]
    assert inside["RANK"] == "0" and "CONDA_PREFIX" not in inside
    assert inside["HF_HOME"] == "/models" and inside["HF_HUB_OFFLINE"] == "1"
    # Without the entrypoint override the same argv would run `glamhpc python -c ...`.
    plain = [a for a in cmd if a not in ("--entrypoint",)]
    plain.remove("python")
    result = subprocess.run(plain, env=host, capture_output=True, text=True)
    assert result.returncode != 0


def test_docker_refuses_an_image_that_was_never_built(standin_env: dict) -> None:
    cmd = c.wrap_command(["true"], "glamhpc:never-built")
    result = subprocess.run(cmd, env=standin_env, capture_output=True, text=True)
    assert result.returncode == 125 and "pull access denied" in result.stderr


ALL_REDUCE = textwrap.dedent(
    """
    import os, torch, torch.distributed as dist
    dist.init_process_group("gloo")
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    with open(f"rank{dist.get_rank()}.txt", "w") as out:  # ranks share stdout: one file each
        out.write(f"world={dist.get_world_size()} sum={t.item()}")
    dist.destroy_process_group()
    """
)


@pytest.mark.timeout(120)
def test_two_rank_torchrun_inside_the_wrapper(tmp_path: Path, standin_env: dict) -> None:
    image = _sif(tmp_path, standin_env)
    script = tmp_path / "allreduce.py"
    script.write_text(ALL_REDUCE)
    inner = [
        "python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(script),
    ]
    job = c.job_command(
        inner,
        str(image),
        environ=standin_env,
        extra_env={"OMP_NUM_THREADS": "1"},
        binds=[str(tmp_path)],
        workdir=str(tmp_path),
    )
    result = subprocess.run(job.argv, env=job.env, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "world=2 sum=3.0"


def test_python_is_what_the_stand_in_image_runs() -> None:
    # The stand-in 'image' runs the host's Python: the venv's must be the one tests use.
    assert Path(sys.executable).parent.joinpath("python").exists()
