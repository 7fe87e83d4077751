"""What every container function agrees on: engine names, image layout, the error type.

The image layout: the model cache (``HF_HOME``) is ``/models``, jobs run with
``HF_HUB_OFFLINE=1`` unless told otherwise, the Docker entrypoint is ``glamhpc``.
"""

from __future__ import annotations

from glamhpc import __version__

#: Engines glamhpc knows, in the order ``glamhpc build`` prefers them: the Dockerfile is the
#: source of truth (hadolint-checked, layer cache), Apptainer builds from the .def otherwise.
BUILD_PREFERENCE = ("docker", "podman", "apptainer", "singularity")
#: For running jobs, HPC engines come first: a login node with both is an HPC site.
RUN_PREFERENCE = ("apptainer", "singularity", "docker", "podman")
APPTAINER_LIKE = frozenset({"apptainer", "singularity"})
DOCKER_LIKE = frozenset({"docker", "podman"})
ENGINES = frozenset(APPTAINER_LIKE | DOCKER_LIKE)

#: CUDA PyTorch runtime image of the torch version constraints.txt pins (pytorch/pytorch's
#: ``<torch>-cuda<cuda>-cudnn<n>-runtime`` naming). Sites usually pass their own base.
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime"
DEFAULT_TAG = f"glamhpc:{__version__}"
#: Where images keep the Hugging Face cache (HF_HOME); a site cache is bind-mounted over it.
IMAGE_MODEL_CACHE = "/models"
DOCKERFILE = "Dockerfile"
DEF_FILE = "containers/glamhpc.def"
#: Folder inside the build context whose content is copied to /models by both recipes;
#: ``stage_model`` fills it for ``--bake-model`` and empties it afterwards.
BAKE_DIR = "containers/bake"


class ContainerError(RuntimeError):
    """A container operation cannot go ahead; the message says why and what to do."""


def check_engine(engine: str) -> None:
    """Raise ContainerError unless ``engine`` is one glamhpc knows."""
    if engine not in ENGINES:
        raise ContainerError(f"unknown engine '{engine}': use one of {', '.join(sorted(ENGINES))}")
