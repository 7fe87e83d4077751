"""Running commands inside an image: ``job_command`` (what a launcher runs on a compute node:
the pure ``wrap_command``, ``engine_env``, ``forwarded_env`` and ``env_binds`` together) and
``run_streaming`` for the CLI's builds.

Variables reach the container by name (``--env NAME``, ``APPTAINERENV_NAME``), never as values on
the engine's command line: node logs print that command, and ``ps`` shows it to every user.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from glamhpc.containers.engines import engine_for_image, run_engine
from glamhpc.containers.layout import APPTAINER_LIKE, ContainerError, check_engine

# Variables a job needs inside the container. Under ``apptainer --cleanenv`` (and always under
# ``docker run``) nothing from the host leaks in, so these are passed explicitly, BY NAME: the
# values never appear on the engine's command line (see ``wrap_command``/``engine_env``).
FORWARDED_NAMES = frozenset(
    {
        # torchrun / torch.distributed rendezvous and ranks
        "MASTER_ADDR",
        "MASTER_PORT",
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "NODE_RANK",
        "OMP_NUM_THREADS",
        "CUDA_VISIBLE_DEVICES",
        "PYTHONUNBUFFERED",
        # scratch and temporary space chosen by the site
        "TMPDIR",
        # Hugging Face: cache location and offline mode (no HF_TOKEN: jobs read a prefetched cache)
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TOKENIZERS_PARALLELISM",
        # MLflow: where runs go, how to authenticate, how the client behaves. An allow-list,
        # not the MLFLOW_ prefix: a site's other MLFLOW_* settings stay on the host.
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_INSECURE_TLS",
        "MLFLOW_TRACKING_SERVER_CERT_PATH",
        "MLFLOW_TRACKING_CLIENT_CERT_PATH",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_EXPERIMENT_NAME",
    }
)
FORWARDED_PREFIXES = (
    "GLAMHPC_",
    "SLURM_",  # submitit's JobEnvironment and torchrun's rendezvous read these
    "SUBMITIT_",
    "TORCHELASTIC_",
    "TORCH_",
    "NCCL_",
    "GLOO_",
    "PET_",  # torchrun reads PET_* as defaults for its own options
)

#: Slurm's GPU allocation, most specific first: the step's GPUs, then the job's. Physical
#: indices, which is what a Docker daemon (outside the job's cgroup) needs; CUDA_VISIBLE_DEVICES
#: inside a cgroup-constrained job is renumbered from 0 and only the fallback outside Slurm.
GPU_ALLOCATION_VARIABLES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GPU_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9:/\-]*")  # an index, GPU-<uuid> or MIG-<uuid>


# ----------------------------------------------------------------------------- run inside


def forwarded_env(
    environ: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The launcher's variables a containerised job needs (pure for a given ``environ``).

    Call it where the job runs (on the compute node, inside the submitted function): SLURM_*,
    MASTER_ADDR/PORT and ranks only exist there. ``extra`` wins over ``environ``.
    """
    source = os.environ if environ is None else environ
    picked = {
        key: value
        for key, value in source.items()
        if key in FORWARDED_NAMES or key.startswith(FORWARDED_PREFIXES)
    }
    picked.update(extra or {})
    return dict(sorted(picked.items()))


#: Variables naming host folders a job reads or writes: forwarding one without binding its
#: folder would point the job at a path that does not exist inside the container.
PATH_VARIABLES = ("HF_HOME", "HF_HUB_CACHE", "GLAMHPC_CACHE", "TMPDIR")


def env_binds(env: Mapping[str, str], exists: Callable[[str], bool] = os.path.isdir) -> list[str]:
    """Binds for the host folders that ``env`` (usually ``forwarded_env()``) refers to: the
    PATH_VARIABLES and the folder of an ``sqlite:////abs/path.db`` MLflow store.

    Relative paths are left out (they resolve inside the bound working directory), and so are
    folders that do not exist (Apptainer refuses a missing bind source).
    """
    paths = [env[name] for name in PATH_VARIABLES if env.get(name)]
    uri = env.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith("sqlite:////"):
        paths.append(os.path.dirname(uri[len("sqlite:///") :]))
    binds: list[str] = []
    for path in paths:
        if os.path.isabs(path) and exists(path) and path not in binds:
            binds.append(path)
    return binds


def _split_bind(spec: str) -> tuple[str, str, str]:
    """``src[:dst[:opts]]`` -> (src, dst, opts); dst defaults to src."""
    if "," in spec:
        # Apptainer splits --bind values (and APPTAINER_BIND) on commas: no escape exists.
        raise ContainerError(f"bad bind '{spec}': paths with commas cannot be bound")
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ContainerError(f"bad bind '{spec}': expected SRC[:DST[:ro|rw]]")
    src = parts[0]
    dst = parts[1] if len(parts) > 1 and parts[1] else src
    opts = parts[2] if len(parts) > 2 else ""
    if opts not in ("", "ro", "rw"):
        raise ContainerError(f"bad bind '{spec}': options must be ro or rw")
    return src, dst, opts


def wrap_command(
    inner: Sequence[str],
    image: str,
    engine: str | None = None,
    binds: Sequence[str] = (),
    env: Iterable[str] | None = None,
    *,
    gpus: bool = False,
    gpu_devices: Sequence[str] | None = None,
    workdir: str | None = None,
    user: str | None = None,
    cleanenv: bool = True,
) -> list[str]:
    """The argv that runs ``inner`` inside ``image`` (pure).

    ``env`` names the variables to pass in (a mapping's keys: its values are not used here).
    Their VALUES never appear on the argv, which lands in node logs and in ``ps``: the engine
    process must be started with the environment :func:`engine_env` returns.

    - apptainer/singularity: ``apptainer exec [--nv] --cleanenv --bind a,b [--pwd DIR] IMAGE
      inner...``; the variables travel as ``APPTAINERENV_NAME`` (``SINGULARITYENV_NAME``), which
      Apptainer applies inside even under ``--cleanenv``. ``--cleanenv`` keeps the host's
      environment (modules, conda, a different HF_HOME) out.
    - docker/podman: ``docker run --rm --network host --ipc host [--gpus "device=0,1"]
      -v SRC:DST ... --env NAME ... [-w DIR] [--user U] --entrypoint inner[0] IMAGE inner[1:]``;
      ``--env NAME`` without a value copies the variable from the docker client's environment.
      The image's entrypoint is ``glamhpc``, so the first word of ``inner`` replaces it
      (otherwise ``torchrun ...`` would run as ``glamhpc torchrun ...``). Host networking lets the
      rendezvous address of the node work unchanged; ``--ipc host`` gives torch the shared
      memory that the default 64 MB /dev/shm lacks. ``gpu_devices`` (indices or UUIDs) selects
      GPUs, else all of them; ``user`` runs as that ``uid:gid`` (podman adds ``--userns keep-id``
      so that a rootless container's files belong to the caller, not to a sub-uid).

    ``engine`` None picks by the image name (a .sif file or Apptainer URI: apptainer; else
    docker). ``binds`` are ``SRC[:DST[:ro]]`` (DST defaults to SRC; duplicates dropped).
    """
    if not inner:
        raise ContainerError("nothing to run: the inner command is empty")
    engine = engine or engine_for_image(image)
    check_engine(engine)
    specs: list[str] = []
    for spec in binds:
        src, dst, opts = _split_bind(spec)
        normal = f"{src}:{dst}" + (f":{opts}" if opts else "")
        if normal not in specs:
            specs.append(normal)
    names = _checked_names(env or ())
    devices = _checked_devices(gpu_devices) if gpu_devices is not None else None
    if engine in APPTAINER_LIKE:
        cmd = [engine, "exec"]
        if gpus:
            cmd.append("--nv")
        if cleanenv:
            cmd.append("--cleanenv")
        if specs:
            cmd += ["--bind", ",".join(specs)]
        if workdir:
            cmd += ["--pwd", workdir]
        return [*cmd, image, *inner]
    cmd = [engine, "run", "--rm", "--network", "host", "--ipc", "host"]
    if gpus:
        cmd += _docker_gpus(engine, devices)
    for spec in specs:
        cmd += ["--volume", spec]
    for name in names:
        cmd += ["--env", name]
    if workdir:
        cmd += ["--workdir", workdir]
    if user:
        # keep-id maps the caller's uid into a rootless container; rootful podman (uid 0) has
        # no user namespace to map and refuses the option.
        if engine == "podman" and user.split(":")[0] != "0":
            cmd += ["--userns", "keep-id"]
        cmd += ["--user", user]
    return [*cmd, "--entrypoint", inner[0], image, *inner[1:]]


def engine_env(env: Mapping[str, str], engine: str) -> dict[str, str]:
    """The variables the engine process needs so that ``env`` reaches the container (pure):
    ``APPTAINERENV_NAME`` / ``SINGULARITYENV_NAME`` for Apptainer-like engines, the variables
    themselves for docker/podman (read by ``--env NAME``). Add them to the process's
    environment: an environment is private to the user, an argv is not."""
    check_engine(engine)
    _checked_names(env)
    if engine in APPTAINER_LIKE:
        prefix = f"{engine.upper()}ENV_"
        return {prefix + key: value for key, value in env.items()}
    return dict(env)


def _checked_names(names: Iterable[str]) -> list[str]:
    checked = []
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise ContainerError(f"bad environment variable name '{name}'")
        checked.append(name)
    return checked


def _checked_devices(devices: Sequence[str]) -> list[str]:
    for device in devices:
        if not _GPU_ID.fullmatch(device):
            raise ContainerError(f"bad GPU id '{device}': expected an index or a GPU UUID")
    return list(devices)


def _docker_gpus(engine: str, devices: list[str] | None) -> list[str]:
    """Podman exposes GPUs through CDI; Docker through the NVIDIA runtime hook, whose
    ``--gpus`` value is CSV: a device list needs the inner quotes (``"device=0,1"``)."""
    if engine == "podman":
        chosen = devices if devices is not None else ["all"]
        return [arg for d in chosen for arg in ("--device", f"nvidia.com/gpu={d}")]
    if devices is None:
        return ["--gpus", "all"]
    return ["--gpus", '"device=' + ",".join(devices) + '"']


def allocated_gpus(environ: Mapping[str, str]) -> list[str] | None:
    """The GPUs this job was given (GPU_ALLOCATION_VARIABLES, first one set), None when no
    allocation is known (outside Slurm with CUDA_VISIBLE_DEVICES unset: every GPU)."""
    for name in GPU_ALLOCATION_VARIABLES:
        value = environ.get(name)
        if value is not None and value.strip() and value.strip() != "NoDevFiles":
            return [part.strip() for part in value.split(",") if part.strip()]
    return None


@dataclass(frozen=True)
class ContainerJob:
    """A job's command wrapped for its image, and the environment to start it with."""

    argv: list[str]
    env: dict[str, str]
    """``environ`` plus what carries the forwarded variables into the container."""


def job_command(
    inner: Sequence[str],
    image: str,
    *,
    environ: Mapping[str, str],
    extra_env: Mapping[str, str] | None = None,
    binds: Sequence[str] = (),
    gpus: bool = False,
    workdir: str | None = None,
    uid_gid: tuple[int, int] | None = None,
    image_id: str | None = None,
) -> ContainerJob:
    """What a launcher runs on a compute node for ``inner`` inside ``image`` (pure for given
    ``environ``, the programs on its PATH and ``uid_gid``; the latter defaults to this
    process's). The engine is ``run_engine``'s: GLAMHPC_CONTAINER_ENGINE, else the first of
    docker, podman (apptainer, singularity for a .sif) on the PATH.

    The forwarded variables (``forwarded_env`` of ``environ`` and ``extra_env``) are passed by
    name, their folders bound (``env_binds``). Docker and Podman jobs run as the calling user
    (files on the shared filesystem stay theirs, never root's) and get the GPUs of the Slurm
    allocation, not every GPU of the node: the daemon runs outside the job's cgroup. Inside,
    the selected GPUs are numbered from 0, so the host's CUDA_VISIBLE_DEVICES is not forwarded.

    The image (and ``image_id``, see ``resolve_image_id``) reach the run as GLAMHPC_CONTAINER /
    GLAMHPC_CONTAINER_ID, which the trainer records as MLflow tags.
    """
    engine = run_engine(image, environ)
    identity = {"GLAMHPC_CONTAINER": image}
    if image_id:
        identity["GLAMHPC_CONTAINER_ID"] = image_id
    extra_env = {**(extra_env or {}), **identity}
    env = forwarded_env(environ, extra_env)
    devices = user = None
    if engine not in APPTAINER_LIKE:
        uid, gid = uid_gid if uid_gid is not None else (os.getuid(), os.getgid())
        user = f"{uid}:{gid}"
        if gpus:
            devices = allocated_gpus(environ)
            env.pop("CUDA_VISIBLE_DEVICES", None)
    argv = wrap_command(
        inner,
        image,
        engine,
        binds=[*binds, *env_binds(env)],
        env=env,
        gpus=gpus,
        gpu_devices=devices,
        workdir=workdir,
        user=user,
    )
    return ContainerJob(argv, {**environ, **(extra_env or {}), **engine_env(env, engine)})


def resolve_image_id(image: str, environ: Mapping[str, str]) -> str | None:
    """The engine's id of a Docker/Podman image as the node sees it (``sha256:...``), so the run
    records which build it ran, not only a tag that may move; None for Apptainer (the .sif path
    is its identity) or when the engine cannot say (the job's own start then fails clearly)."""
    engine = run_engine(image, environ)
    if engine in APPTAINER_LIKE:
        return None
    try:
        out = subprocess.run(
            [engine, "image", "inspect", "--format", "{{.Id}}", image],
            env=dict(environ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = out.stdout.strip()
    # Podman prints the bare hex digest; the run records one form whichever engine ran it.
    if re.fullmatch(r"[0-9a-f]{64}", found):
        found = "sha256:" + found
    return found if out.returncode == 0 and found.startswith("sha256:") else None


# ----------------------------------------------------------------------------- running


def format_command(cmd: Sequence[str]) -> str:
    """A shell-pasteable rendering of an argv (what the CLI prints before running it)."""
    import shlex

    return shlex.join(cmd)


def run_streaming(
    cmd: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run ``cmd`` and copy its combined output line by line to ``out`` as it comes.

    Builds take minutes: streaming keeps the user informed, and merging stderr keeps the
    engine's messages in order with its progress lines. Ctrl-C stops the child too.
    """
    sink = out if out is not None else sys.stdout
    try:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except FileNotFoundError as exc:
        raise ContainerError(f"cannot run {cmd[0]}: {exc.strerror}") from None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            sink.write(line)
            sink.flush()
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
