"""The Podman tier: the real Dockerfile built by `glamhpc build --engine podman`, and commands run
in the image under podman, rootful and rootless.

Needs podman and the tier's store and base image (`sh tests/containers/podman_tier.sh up`: a
private configuration, Debian minbase + Python + the local CPU torch wheel). CI brings it up and
requires it (GLAMHPC_PODMAN_TESTS=1 GLAMHPC_REQUIRE_PODMAN=1); elsewhere it is opt-in and skipped
with the reason. glamhpc picks podman through GLAMHPC_CONTAINER_ENGINE=podman (this machine has a
docker CLI too). The 2-node Slurm job under podman is tests/containers/test_podman_slurm.py.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from glamhpc import containers as c

from .conftest import (
    PODMAN_BASE,
    PODMAN_TAG,
    ROOT,
    ROOTLESS_DIR,
    ROOTLESS_USER,
    BuiltImage,
    podman,
    podman_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

QUICKSTART = [
    "glamhpc", "train", "quickstart.yaml", "--run-name", "podman",
    "--set", "env.num_envs=4", "--set", "ppo.steps_per_env=8", "--set", "ppo.minibatch_size=16",
    "--set", "train.max_updates=2", "--set", "train.progress=false",
]  # fmt: skip


def test_entrypoint_is_glamhpc(podman_image: BuiltImage) -> None:
    out = podman("run", "--rm", podman_image.tag, "--version").stdout
    assert out.strip() == f"glamhpc {c.__version__}"


def test_oci_labels_match_the_commit(podman_image: BuiltImage) -> None:
    labels = json.loads(
        podman("image", "inspect", "--format", "{{json .Config.Labels}}", podman_image.tag).stdout
    )
    assert labels["org.opencontainers.image.version"] == c.__version__
    assert labels["org.opencontainers.image.revision"] == podman_image.revision
    assert len(podman_image.revision.split("-")[0]) == 40  # a real commit, not "unknown"
    assert labels["org.opencontainers.image.base.name"] == PODMAN_BASE
    marker = podman("run", "--rm", "--entrypoint", "cat", podman_image.tag, "/etc/glamhpc-image")
    assert marker.stdout.strip() == f"glamhpc {c.__version__} {podman_image.revision}"


def test_the_launcher_picks_podman_and_resolves_its_image_id(podman_image: BuiltImage) -> None:
    env = podman_env()
    assert c.run_engine(podman_image.tag, env) == "podman"
    assert c.resolve_image_id(podman_image.tag, env) == "sha256:" + podman_image.image_id


def _train_in_image(job: c.ContainerJob, work: Path, run_as: list[str]) -> None:
    result = subprocess.run(
        [*run_as, *job.argv], cwd=work, env=job.env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = list((work / "runs").glob("*/podman"))
    assert len(runs) == 1 and (runs[0] / "DONE").exists(), result.stdout[-2000:]
    run_id = (runs[0] / "mlflow_run_id").read_text().strip()
    tags = MlflowClient(f"sqlite:///{work}/mlflow.db").get_run(run_id).data.tags
    assert tags["container.detected"] == "podman"  # /run/.containerenv, from inside
    assert tags["container.image_id"] == job.env["GLAMHPC_CONTAINER_ID"]


def _quickstart_job(
    image: BuiltImage, work: Path, environ: dict[str, str], uid_gid: tuple[int, int]
) -> c.ContainerJob:
    """The 2-update quickstart as the launcher wraps it (the image id is the build's: asking a
    rootless store's engine as root would write root-owned files into that store)."""
    shutil.copy(ROOT / "configs" / "quickstart.yaml", work / "quickstart.yaml")
    shutil.chown(work / "quickstart.yaml", *uid_gid)
    return c.job_command(
        QUICKSTART,
        image.tag,
        environ=environ,
        extra_env={
            "GLAMHPC_CACHE": str(work / "cache"),
            "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db",
        },
        binds=[str(work)],
        workdir=str(work),
        uid_gid=uid_gid,
        image_id="sha256:" + image.image_id,
    )


def test_doctor_runs_inside_the_image(podman_image: BuiltImage) -> None:
    result = podman("run", "--rm", podman_image.tag, "doctor", check=False)
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out[-3000:]
    assert result.returncode == 0 and out.rstrip().endswith("ready"), out[-3000:]
    assert "python" in out and "HF_HUB_OFFLINE=1" in out, out[-3000:]


def test_doctor_container_validates_the_image_with_podman(podman_image: BuiltImage) -> None:
    """The site's validation recipe (docs/CONTAINERS.md) run by `glamhpc doctor --container`
    with podman: labels, entrypoint and an offline training smoke run inside the image."""
    done = subprocess.run(
        [sys.executable, "-m", "glamhpc", "doctor", "--container", podman_image.tag, "--json"],
        env=podman_env(), capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    # The engine check picks what the recipe runs with: podman, though a docker CLI is here too.
    assert checks["container engine"]["detail"].startswith("podman;"), checks["container engine"]
    for step in ("labels", "entrypoint", "smoke"):
        assert checks[f"image {step}"]["status"] == "ok", (checks[f"image {step}"], done.stderr)
    assert checks["image labels"]["detail"] == (
        f"glamhpc {c.__version__}, commit {podman_image.revision[:12]}"
    )
    assert "resume_exact=1" in checks["image smoke"]["detail"]
    print("\n".join(f"{k}: {v['detail']}" for k, v in checks.items() if k.startswith("image ")))


def test_doctor_checks_a_podman_image_for_jobs(podman_image: BuiltImage, tmp_path: Path) -> None:
    """`glamhpc doctor --set launch.container=IMAGE` asks podman (not the docker CLI also here)
    for its version and the image; a missing image names the podman build that makes it."""
    run = [sys.executable, "-m", "glamhpc", "doctor", "--json", "--set"]
    found = subprocess.run(
        [*run, f"launch.container={podman_image.tag}"],
        cwd=tmp_path, env=podman_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    check = {c["name"]: c for c in json.loads(found.stdout)}["container engine"]
    assert check["status"] == "ok" and check["detail"].startswith("podman;"), check
    missing = subprocess.run(
        [*run, "launch.container=glamhpc:never-built"],
        cwd=tmp_path, env=podman_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    check = {c["name"]: c for c in json.loads(missing.stdout)}["container engine"]
    assert missing.returncode == 1 and check["status"] == "missing", check
    assert "glamhpc build --engine podman" in check["fix"]


# ----------------------------------------------------------------------------- rootless


def rootless_env() -> dict[str, str]:
    """What the rootless user's podman needs: its own store, configuration and runtime folder."""
    env = podman_env()
    env.update(
        HOME=str(ROOTLESS_DIR / "home"),
        XDG_RUNTIME_DIR=str(ROOTLESS_DIR / "xdg"),
        CONTAINERS_CONF=str(ROOTLESS_DIR / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(ROOTLESS_DIR / "storage.conf"),
    )
    return env


def as_rootless(
    *args: str, cwd: Path = ROOTLESS_DIR, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", ROOTLESS_USER, "--", *args],
        cwd=cwd, env=rootless_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def rootless_image(podman_image: BuiltImage) -> BuiltImage:
    """The repository's image built by rootless podman in the user's own store, with the argv
    `glamhpc build --engine podman` runs (this checkout's Python lives where only root can
    run it). The store's layer cache keeps the dependency layers between runs. Rootless podman
    is part of the tier where the tier's probe found it working; the probe's error otherwise."""
    status = ROOTLESS_DIR / "status"
    probe = status.read_text().strip() if status.is_file() else "no probe (podman_tier.sh up)"
    if probe != "ok":
        reason = f"rootless podman does not work here: {probe}"
        if os.environ.get("GLAMHPC_REQUIRE_PODMAN") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    argv = c.build_command(
        "podman", PODMAN_BASE, PODMAN_TAG, revision=podman_image.revision,
        source=c.git_source(ROOT), extra_args=["--network=host"],
    )  # fmt: skip
    built = as_rootless(*argv, cwd=ROOT, timeout=1400)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-2000:]
    found = as_rootless("podman", "image", "inspect", "--format", "{{.Id}}", PODMAN_TAG)
    return BuiltImage(PODMAN_TAG, podman_image.revision, found.stdout.strip())


@pytest.fixture
def rootless_work() -> Iterator[Path]:
    """A folder the rootless user owns (pytest's tmp_path is private to root)."""
    work = ROOTLESS_DIR / "work" / uuid.uuid4().hex[:12]
    work.mkdir(parents=True)
    for folder in (work.parent, work):
        shutil.chown(folder, ROOTLESS_USER, ROOTLESS_USER)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def test_rootless_build_labels_and_entrypoint(rootless_image: BuiltImage) -> None:
    info = as_rootless("podman", "info", "--format", "{{.Host.Security.Rootless}}")
    assert info.stdout.strip() == "true", info.stderr
    labels = as_rootless(
        "podman", "image", "inspect", "--format", "{{json .Config.Labels}}", rootless_image.tag
    )
    revision = json.loads(labels.stdout)["org.opencontainers.image.revision"]
    assert revision == rootless_image.revision and len(revision.split("-")[0]) == 40
    out = as_rootless("podman", "run", "--rm", rootless_image.tag, "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"glamhpc {c.__version__}", out.stderr


def test_rootless_job_writes_files_as_the_caller(
    rootless_image: BuiltImage, rootless_work: Path
) -> None:
    """The 2-update quickstart inside the image, wrapped by the launcher's `job_command` for a
    non-root caller: `--userns keep-id --user uid:gid`, so what the job writes on the (shared)
    filesystem is the caller's, not a sub-uid's or 10001's. (Rootful, as root, trains in the
    2-node job of test_podman_slurm.py; `job_command` leaves keep-id out there.)"""
    user = pwd.getpwnam(ROOTLESS_USER)
    job = _quickstart_job(rootless_image, rootless_work, rootless_env(), (user.pw_uid, user.pw_gid))
    assert job.argv[job.argv.index("--userns") + 1] == "keep-id"
    _train_in_image(job, rootless_work, ["runuser", "-u", ROOTLESS_USER, "--"])
    written = [p for p in rootless_work.rglob("*") if not p.is_symlink()]
    assert written and {p.stat().st_uid for p in written} == {user.pw_uid}
