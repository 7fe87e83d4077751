"""Fixtures for the container tests: stand-in engines on PATH, a synthetic hub cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "bin"
VENV_BIN = Path(sys.executable).parent


def read_log(path: Path) -> list[dict]:
    """Calls recorded by the stand-in engines, oldest first."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def standin_env(tmp_path: Path) -> dict[str, str]:
    """Environment with the stand-in engines first on PATH and nothing else container-ish.

    /usr/local/bin is left out on purpose: some machines have a bare docker CLI there.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GLAMHPC_", "APPTAINER", "SINGULARITY", "DOCKER"))
    }
    env["PATH"] = os.pathsep.join([str(STANDINS), str(VENV_BIN), "/usr/bin", "/bin"])
    env["GLAMHPC_STANDIN_LOG"] = str(tmp_path / "standin.log")
    env["GLAMHPC_STANDIN_STATE"] = str(tmp_path / "standin-state")
    return env


def make_hub_model(cache: Path, repo_id: str, *, complete: bool = True) -> Path:
    """A hub cache entry laid out like huggingface_hub writes it (blobs + symlinked snapshot)."""
    folder = cache / "hub" / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    files = {"config.json": b'{"model_type": "t5"}', "tokenizer.json": b"{}"}
    if complete:
        files["model.safetensors"] = b"\0" * 64
    for index, (name, content) in enumerate(files.items()):
        blob = folder / "blobs" / f"blob{index}"
        blob.write_bytes(content)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each Dockerfile instruction, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        pending = ""
        out.append((keyword.upper(), " ".join(rest.split())))
    return out


# ----------------------------------------------------------------------------- the Docker tier
# A real Docker engine and a locally made base image (tests/containers/docker_tier.sh up). CI
# brings it up and sets GLAMHPC_DOCKER_TESTS=1 GLAMHPC_REQUIRE_DOCKER=1: then a missing piece is
# a failure, not a skip. Elsewhere the tier is opt-in (the first build takes minutes).

DOCKER_DIR = Path(os.environ.get("GLAMHPC_DOCKER_DIR", "/var/tmp/glamhpc-docker"))
DOCKER_BASE = os.environ.get("GLAMHPC_DOCKER_BASE", "glamhpc-test-base:cpu")
DOCKER_TAG = "glamhpc:docker-tier"


def docker_env() -> dict[str, str]:
    env = dict(os.environ)
    socket = DOCKER_DIR / "docker.sock"
    if "DOCKER_HOST" not in env and socket.exists():
        env["DOCKER_HOST"] = f"unix://{socket}"
    return env


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args],
        env=docker_env(),
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def docker_skip_reason() -> str | None:
    if os.environ.get("GLAMHPC_DOCKER_TESTS") != "1":
        return (
            "optional Docker tier: set GLAMHPC_DOCKER_TESTS=1 after "
            "`sh tests/containers/docker_tier.sh up` (CI does both)"
        )
    if shutil.which("docker") is None:
        return "no docker CLI (sh tests/containers/docker_tier.sh up)"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker not runnable: {exc}"
    if info.returncode != 0:
        return "no reachable Docker daemon (sh tests/containers/docker_tier.sh up)"
    if docker("image", "inspect", DOCKER_BASE, check=False).returncode != 0:
        return f"base image {DOCKER_BASE} missing (make it: sh tests/containers/docker_tier.sh up)"
    return None


def require_docker() -> None:
    """Skip (opt-in tier) or, where CI requires the tier, fail with the reason."""
    reason = docker_skip_reason()
    if reason is None:
        return
    if os.environ.get("GLAMHPC_REQUIRE_DOCKER") == "1":
        pytest.fail(f"the Docker tier is required here: {reason}")
    pytest.skip(reason)


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    revision: str
    """The commit `glamhpc build` labelled the image with (HEAD may move while tests run)."""
    image_id: str


@pytest.fixture(scope="session")
def docker_image() -> BuiltImage:
    """The repository's Dockerfile built once per session by the real CLI path (`glamhpc build`
    picks docker, prints and streams the build). The private daemon has no bridge network, so
    the build uses the host's (PyPI through its CA bundle)."""
    require_docker()
    result = subprocess.run(
        [sys.executable, "-m", "glamhpc", "build", "--engine", "docker",
         "--base-image", DOCKER_BASE, "--tag", DOCKER_TAG, "--engine-arg=--network=host"],
        cwd=ROOT, env=docker_env(), capture_output=True, text=True, timeout=1400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"built {DOCKER_TAG}" in result.stdout
    printed = next(line for line in result.stdout.splitlines() if line.startswith("$ docker"))
    revision = printed.split("REVISION=")[1].split()[0]
    image_id = docker("image", "inspect", "--format", "{{.Id}}", DOCKER_TAG).stdout.strip()
    return BuiltImage(DOCKER_TAG, revision, image_id)
