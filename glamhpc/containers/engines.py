"""Container engines: find and choose one, and the pure argv that builds the glamhpc image.

``build_command`` only turns arguments into an argv list, so it is tested exhaustively; the git
helpers label the image with the checkout it was built from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from glamhpc import __version__
from glamhpc.containers.layout import (
    APPTAINER_LIKE,
    BUILD_PREFERENCE,
    DEF_FILE,
    DEFAULT_BASE_IMAGE,
    DEFAULT_TAG,
    DOCKER_LIKE,
    DOCKERFILE,
    ContainerError,
    check_engine,
)

# ----------------------------------------------------------------------------- engines


def find_engines(
    preference: Sequence[str] = BUILD_PREFERENCE,
    which: Callable[[str], str | None] = shutil.which,
) -> list[str]:
    """Container engines found on PATH, in ``preference`` order."""
    return [name for name in preference if which(name)]


def choose_engine(
    requested: str | None,
    preference: Sequence[str] = BUILD_PREFERENCE,
    which: Callable[[str], str | None] = shutil.which,
) -> str:
    """The engine to use: the requested one when it is on PATH, else the first one found.

    Raises ContainerError with the install hint when there is none.
    """
    if requested is not None:
        check_engine(requested)
        if not which(requested):
            found = find_engines(preference, which)
            others = f" (found: {', '.join(found)})" if found else ""
            raise ContainerError(f"engine '{requested}' is not on PATH{others}")
        return requested
    found = find_engines(preference, which)
    if not found:
        raise ContainerError(
            "no container engine found on PATH (looked for "
            + ", ".join(preference)
            + "). On an HPC login node try `module load apptainer`; on a workstation install "
            "Docker or Podman (Debian: apt-get install docker.io)."
        )
    return found[0]


def engine_for_image(image: str) -> str:
    """Guess the engine from an image reference (pure): SIF files and Apptainer URIs go to
    Apptainer, everything else is taken as a Docker image name."""
    lowered = image.lower()
    if lowered.endswith((".sif", ".simg")) or lowered.startswith(
        ("oras://", "library://", "shub://", "docker://", "docker-archive:", "oci-archive:")
    ):
        return "apptainer"
    return "docker"


#: Names the engine that runs jobs and validates images, where the image's kind leaves a choice
#: (docker or podman for an image name, apptainer or singularity for a .sif). Sites with both
#: Docker and Podman, or a podman-docker shim, say which; it travels to the nodes with the job's
#: environment like DOCKER_HOST does.
ENGINE_VARIABLE = "GLAMHPC_CONTAINER_ENGINE"


def run_candidates(image: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The engines that may run ``image``, preferred first (pure): ENGINE_VARIABLE alone when it
    is set, else docker then podman for an image name, apptainer then singularity for a .sif."""
    family = ("apptainer", "singularity") if engine_for_image(image) in APPTAINER_LIKE else (
        "docker", "podman"
    )  # fmt: skip
    chosen = environ.get(ENGINE_VARIABLE, "").strip()
    if not chosen:
        return family
    if chosen not in family:
        raise ContainerError(
            f"{ENGINE_VARIABLE}={chosen} cannot run {image}: use one of {', '.join(family)}"
            f" (or unset {ENGINE_VARIABLE})"
        )
    return (chosen,)


def run_engine(image: str, environ: Mapping[str, str]) -> str:
    """The engine a job uses for ``image``: the first of ``run_candidates`` on the PATH of
    ``environ`` (a node with Podman only runs its jobs with podman), else the preferred one
    (whose absence the job's start then reports)."""
    candidates = run_candidates(image, environ)
    path = environ.get("PATH")
    found = [name for name in candidates if shutil.which(name, path=path)]
    return (found or list(candidates))[0]


# ----------------------------------------------------------------------------- build


def sif_name(tag: str) -> str:
    """``glamhpc:0.1.0`` -> ``glamhpc_0.1.0.sif``; a name already ending in .sif is kept."""
    if tag.endswith(".sif"):
        return tag
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tag) + ".sif"


def build_command(
    engine: str,
    base_image: str | None = None,
    tag: str | None = None,
    bake_model: str | None = None,
    *,
    version: str = __version__,
    revision: str = "unknown",
    source: str = "unknown",
    from_image: str | None = None,
    context: str = ".",
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The argv that builds the glamhpc image with ``engine`` (pure; run it from ``context``).

    - docker/podman: ``docker build`` of the Dockerfile; ``tag`` names the image.
    - apptainer/singularity: ``apptainer build`` of containers/glamhpc.def into ``tag`` as a SIF
      file (``glamhpc:0.1.0`` becomes ``glamhpc_0.1.0.sif``). By default the .def bootstraps from
      ``base_image`` with the same steps as the Dockerfile; ``from_image`` instead converts an
      already-built Docker image (``docker-daemon://glamhpc:0.1.0``-style name, or a
      ``docker save`` archive ``*.tar``).
    - ``bake_model`` only labels the image: the weights themselves are copied from BAKE_DIR,
      which ``stage_model`` fills before the build.
    """
    check_engine(engine)
    if from_image is not None and engine not in APPTAINER_LIKE:
        raise ContainerError("--from-image converts a Docker image: it needs apptainer/singularity")
    if from_image is not None and base_image is not None:
        raise ContainerError("give either a base image or --from-image, not both")
    tag = tag or DEFAULT_TAG
    args = {
        "VERSION": version,
        "REVISION": revision,
        "SOURCE": source,
        "BAKED_MODEL": bake_model or "none",
    }
    if engine in DOCKER_LIKE:
        args = {"BASE_IMAGE": base_image or DEFAULT_BASE_IMAGE, **args}
        cmd = [engine, "build", "--file", DOCKERFILE, "--tag", tag]
        for key, value in args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        return [*cmd, *extra_args, context]
    if from_image is not None:
        bootstrap, ref = _docker_source(from_image)
        args = {"BOOTSTRAP": bootstrap, "FROM": ref, **args}
    else:
        args = {"BOOTSTRAP": "docker", "FROM": base_image or DEFAULT_BASE_IMAGE, **args}
    cmd = [engine, "build"]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    return [*cmd, *extra_args, sif_name(tag), DEF_FILE]


def _docker_source(image: str) -> tuple[str, str]:
    """Bootstrap agent and From: value for converting a local Docker image or archive."""
    for agent in ("docker-daemon", "docker-archive"):
        prefix = agent + "://"
        if image.startswith(prefix):
            return agent, image[len(prefix) :]
    if image.endswith((".tar", ".tar.gz", ".tgz")):
        return "docker-archive", image
    return "docker-daemon", image


def _git(root: Path, *args: str) -> str:
    """Output of a git command in ``root``; raises OSError/CalledProcessError on failure."""
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def git_revision(root: Path) -> str:
    """Commit of the checkout (``-dirty`` when it has local changes), or ``unknown``."""
    try:
        rev = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def git_source(root: Path) -> str:
    """URL of the checkout's ``origin`` remote (credentials stripped), or ``unknown``."""
    try:
        url = _git(root, "remote", "get-url", "origin")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    # A label is public metadata: never bake a token that sits in an https remote into it.
    return re.sub(r"//[^/@]+@", "//", url) or "unknown"


def project_root(start: Path | None = None) -> Path:
    """The source checkout holding the Dockerfile and .def (builds need the sources)."""
    # parents[2]: the folder holding the glamhpc package (a checkout, for editable installs).
    here = Path(__file__).resolve().parents[2]
    candidates = [start] if start is not None else [Path.cwd(), here]
    for base in candidates:
        for folder in (base, *base.parents):
            if (folder / DOCKERFILE).is_file() and (folder / DEF_FILE).is_file():
                return folder
    raise ContainerError(
        "glamhpc build needs the glamhpc source checkout (Dockerfile and "
        f"{DEF_FILE}); run it from inside the repository"
    )
