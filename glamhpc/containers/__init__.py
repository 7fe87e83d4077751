"""Container images for glamhpc: build them (Docker/Podman/Apptainer) and run commands inside them.

- ``layout``: engine names, the image layout every function agrees on, ``ContainerError``;
- ``engines``: find/choose an engine and the pure ``build_command``;
- ``run``: ``job_command`` (built from the pure ``wrap_command``/``engine_env``/
  ``forwarded_env``/``env_binds``) that the launcher calls on a compute node, and
  ``run_streaming``;
- ``bake``: stage a prefetched hub model into the build context (``--bake-model``);
- ``deffile``: the Apptainer definition checker (``check_def``).

The names callers use are re-exported here (``from glamhpc.containers import wrap_command``).
Nothing in this package imports torch, transformers or the environments: it runs on login
nodes and in the launcher before any of those are needed.
"""

from __future__ import annotations

from glamhpc import __version__
from glamhpc.containers.bake import clear_staged, stage_model
from glamhpc.containers.deffile import (
    DEF_APP_SECTIONS,
    DEF_BOOTSTRAP_AGENTS,
    DEF_HEADER_KEYWORDS,
    DEF_SECTIONS,
    DefFile,
    DefSection,
    check_def,
    def_arguments,
    find_shellcheck,
    parse_def,
    render_def,
)
from glamhpc.containers.engines import (
    ENGINE_VARIABLE,
    build_command,
    choose_engine,
    engine_for_image,
    find_engines,
    git_revision,
    git_source,
    project_root,
    run_candidates,
    run_engine,
    sif_name,
)
from glamhpc.containers.layout import (
    APPTAINER_LIKE,
    BAKE_DIR,
    BUILD_PREFERENCE,
    DEF_FILE,
    DEFAULT_BASE_IMAGE,
    DEFAULT_TAG,
    DOCKER_LIKE,
    DOCKERFILE,
    ENGINES,
    IMAGE_MODEL_CACHE,
    RUN_PREFERENCE,
    ContainerError,
)
from glamhpc.containers.run import (
    FORWARDED_NAMES,
    FORWARDED_PREFIXES,
    GPU_ALLOCATION_VARIABLES,
    PATH_VARIABLES,
    ContainerJob,
    allocated_gpus,
    engine_env,
    env_binds,
    format_command,
    forwarded_env,
    job_command,
    resolve_image_id,
    run_streaming,
    wrap_command,
)
from glamhpc.policy.hubcache import (
    CachedModel,
    hub_cache_candidates,
    hub_cache_dir,
    inspect_cached_model,
    missing_model_files,
    repo_folder,
)

__all__ = [
    "APPTAINER_LIKE",
    "BAKE_DIR",
    "BUILD_PREFERENCE",
    "DEFAULT_BASE_IMAGE",
    "DEFAULT_TAG",
    "DEF_APP_SECTIONS",
    "DEF_BOOTSTRAP_AGENTS",
    "DEF_FILE",
    "DEF_HEADER_KEYWORDS",
    "DEF_SECTIONS",
    "DOCKERFILE",
    "DOCKER_LIKE",
    "ENGINES",
    "ENGINE_VARIABLE",
    "FORWARDED_NAMES",
    "FORWARDED_PREFIXES",
    "GPU_ALLOCATION_VARIABLES",
    "IMAGE_MODEL_CACHE",
    "PATH_VARIABLES",
    "RUN_PREFERENCE",
    "CachedModel",
    "ContainerError",
    "ContainerJob",
    "DefFile",
    "DefSection",
    "__version__",
    "allocated_gpus",
    "build_command",
    "check_def",
    "choose_engine",
    "clear_staged",
    "def_arguments",
    "engine_env",
    "engine_for_image",
    "env_binds",
    "find_engines",
    "find_shellcheck",
    "format_command",
    "forwarded_env",
    "git_revision",
    "git_source",
    "hub_cache_candidates",
    "hub_cache_dir",
    "inspect_cached_model",
    "job_command",
    "missing_model_files",
    "parse_def",
    "project_root",
    "render_def",
    "repo_folder",
    "resolve_image_id",
    "run_candidates",
    "run_engine",
    "run_streaming",
    "sif_name",
    "stage_model",
    "wrap_command",
]
