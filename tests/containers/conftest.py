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


# ----------------------------------------------------------------------------- the Podman tier
# A real Podman engine with its own storage and configuration (tests/containers/podman_tier.sh
# up), gated like the Docker tier: GLAMHPC_PODMAN_TESTS=1 runs it, GLAMHPC_REQUIRE_PODMAN=1 (CI)
# turns a missing piece into a failure. Podman has no daemon: CONTAINERS_CONF and
# CONTAINERS_STORAGE_CONF select the tier's store, and GLAMHPC_CONTAINER_ENGINE=podman makes
# glamhpc pick podman where docker is on PATH too (the Docker tier's CLI is).

PODMAN_DIR = Path(os.environ.get("GLAMHPC_PODMAN_DIR", "/var/tmp/glamhpc-podman"))
PODMAN_BASE = os.environ.get("GLAMHPC_PODMAN_BASE", "glamhpc-test-base:cpu")
PODMAN_TAG = "glamhpc:podman-tier"
#: The unprivileged user the tier sets up for rootless podman (subuid/subgid ranges).
ROOTLESS_USER = os.environ.get("GLAMHPC_PODMAN_USER", "glamhpc-rootless")
ROOTLESS_DIR = PODMAN_DIR / "rootless"


def podman_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env.setdefault("CONTAINERS_CONF", str(PODMAN_DIR / "containers.conf"))
    env.setdefault("CONTAINERS_STORAGE_CONF", str(PODMAN_DIR / "storage.conf"))
    env["GLAMHPC_CONTAINER_ENGINE"] = "podman"
    return env


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def podman_skip_reason() -> str | None:
    if os.environ.get("GLAMHPC_PODMAN_TESTS") != "1":
        return (
            "optional Podman tier: set GLAMHPC_PODMAN_TESTS=1 after "
            "`sh tests/containers/podman_tier.sh up` (CI does both)"
        )
    if shutil.which("podman") is None:
        return "no podman (sh tests/containers/podman_tier.sh up)"
    if not (PODMAN_DIR / "containers.conf").is_file():
        return f"no tier configuration in {PODMAN_DIR} (sh tests/containers/podman_tier.sh up)"
    try:
        info = podman("info", "--format", "{{.Store.GraphRoot}}", check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"podman not runnable: {exc}"
    if info.returncode != 0:
        return f"podman info failed: {(info.stderr or info.stdout).strip()[-300:]}"
    if podman("image", "exists", PODMAN_BASE, check=False).returncode != 0:
        return f"base image {PODMAN_BASE} missing (make it: sh tests/containers/podman_tier.sh up)"
    return None


def require_podman() -> None:
    """Skip (opt-in tier) or, where CI requires the tier, fail with the reason."""
    reason = podman_skip_reason()
    if reason is None:
        return
    if os.environ.get("GLAMHPC_REQUIRE_PODMAN") == "1":
        pytest.fail(f"the Podman tier is required here: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def podman_image() -> BuiltImage:
    """The repository's Dockerfile built once per session by `glamhpc build --engine podman`
    into the tier's store (its layer cache keeps the dependency layers between runs)."""
    require_podman()
    result = subprocess.run(
        [sys.executable, "-m", "glamhpc", "build", "--engine", "podman",
         "--base-image", PODMAN_BASE, "--tag", PODMAN_TAG, "--engine-arg=--network=host"],
        cwd=ROOT, env=podman_env(), capture_output=True, text=True, timeout=1400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"built {PODMAN_TAG}" in result.stdout
    printed = next(line for line in result.stdout.splitlines() if line.startswith("$ podman"))
    revision = printed.split("REVISION=")[1].split()[0]
    image_id = podman("image", "inspect", "--format", "{{.Id}}", PODMAN_TAG).stdout.strip()
    return BuiltImage(PODMAN_TAG, revision, image_id)
