"""The image validation recipe (`glamhpc doctor --container IMAGE`): pure steps and judging, and
the whole recipe through the stand-in Apptainer (a real .sif cannot be built here); the same
recipe against the real Docker image is in test_docker_build.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glamhpc.containers.validate import judge, validation_steps

from .conftest import ROOT


def test_steps_are_the_same_three_for_every_engine() -> None:
    for engine in ("apptainer", "singularity", "docker", "podman"):
        steps = validation_steps("img", engine, "/scratch")
        assert [s.name for s in steps] == ["labels", "entrypoint", "smoke"]
        assert all(s.argv[0] == engine for s in steps)
    apptainer = validation_steps("g.sif", "apptainer", "/scratch")
    assert "--cleanenv" in apptainer[2].argv and "train.run_root=/scratch/runs" in apptainer[2].argv
    docker = validation_steps("g:1", "docker", "/scratch")
    # The smoke run proves the image works offline, as on a compute node without internet.
    assert docker[2].argv[-3:] == ["g:1", "train", "--smoke"] and "none" in docker[2].argv


LABELS = {
    "org.opencontainers.image.version": "0.1.0",
    "org.opencontainers.image.revision": "a" * 40,
}


@pytest.mark.parametrize(
    ("step", "code", "output", "ok", "shown"),
    [
        ("labels", 0, json.dumps(LABELS), True, "glamhpc 0.1.0, commit aaaaaaaaaaaa"),
        ("labels", 0, json.dumps({"data": {"attributes": {"labels": LABELS}}}), True, "0.1.0"),
        ("labels", 0, "{}", False, "not an image `glamhpc build` made"),
        ("labels", 0, "not json", False, "not an image"),
        ("labels", 1, "Error: No such image: g:1", False, "exit 1: Error: No such image"),
        ("entrypoint", 0, "glamhpc 0.1.0\n", True, "glamhpc 0.1.0"),
        ("entrypoint", 0, "Usage: python\n", False, "unexpected answer"),
        ("entrypoint", 0, "", False, "unexpected answer: (no output)"),
        ("smoke", 0, "...\nRESULT smoke x=1 finite=1 resume_exact=1\n", True, "RESULT smoke"),
        ("smoke", 0, "RESULT smoke finite=0 resume_exact=1", False, "finite=0"),
        ("smoke", 0, "RESULT smoke finite=1 resume_exact=10", False, "resume_exact=10"),
        ("smoke", 0, "done\n", False, "no RESULT line; last line: done"),
        ("smoke", 2, "config error\n", False, "exit 2: config error"),
    ],
)
def test_judge(step: str, code: int, output: str, ok: bool, shown: str) -> None:
    passed, detail = judge(step, code, output)
    assert passed is ok and shown in detail


def test_doctor_container_runs_the_recipe_with_the_stand_in_apptainer(
    tmp_path: Path, standin_env: dict
) -> None:
    env = {**standin_env, "GLAMHPC_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    image = tmp_path / "glamhpc.sif"
    glamhpc = [sys.executable, "-m", "glamhpc"]
    built = subprocess.run(
        [*glamhpc, "build", "--engine", "apptainer", "--tag", str(image)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    done = subprocess.run(
        [*glamhpc, "doctor", "--container", str(image), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    for step in ("labels", "entrypoint", "smoke"):
        assert checks[f"image {step}"]["status"] == "ok", checks[f"image {step}"]
    assert checks["image labels"]["detail"].startswith("glamhpc 0.1.0, commit ")
    assert "resume_exact=1" in checks["image smoke"]["detail"]


def test_doctor_container_stops_at_the_first_failing_step(
    tmp_path: Path, standin_env: dict
) -> None:
    fake = tmp_path / "not-ours.sif"
    fake.write_text(json.dumps({"def": str(tmp_path / "x.def"), "build_args": {}, "env": {}}))
    (tmp_path / "x.def").write_text("Bootstrap: docker\n%labels\n    maintainer someone\n")
    done = subprocess.run(
        [sys.executable, "-m", "glamhpc", "doctor", "--container", str(fake), "--json"],
        cwd=tmp_path, env=standin_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert checks["image labels"]["status"] == "missing"
    assert "not an image `glamhpc build` made" in checks["image labels"]["detail"]
    assert "image entrypoint" not in checks and "Traceback" not in done.stderr
