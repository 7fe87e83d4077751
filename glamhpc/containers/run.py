"""Running commands inside an image: the pure ``wrap_command``/``forwarded_env``/``env_binds``
that the launcher calls on a compute node, and ``run_streaming`` for the CLI's builds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from glamhpc.containers.engines import engine_for_image
from glamhpc.containers.layout import APPTAINER_LIKE, ContainerError, check_engine

# Variables a job needs inside the container. Under ``apptainer --cleanenv`` (and always under
# ``docker run``) nothing from the host leaks in, so these are passed explicitly.
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
        # scratch and temporary space chosen by the site
        "TMPDIR",
        # Hugging Face: cache location and offline mode
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TOKENIZERS_PARALLELISM",
    }
)
FORWARDED_PREFIXES = (
    "GLAMHPC_",
    "MLFLOW_",
    "SLURM_",  # submitit's JobEnvironment and torchrun's rendezvous read these
    "SUBMITIT_",
    "TORCHELASTIC_",
    "TORCH_",
    "NCCL_",
    "GLOO_",
    "PET_",  # torchrun reads PET_* as defaults for its own options
)


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
    env: Mapping[str, str] | None = None,
    *,
    gpus: bool = False,
    workdir: str | None = None,
    user: str | None = None,
    cleanenv: bool = True,
) -> list[str]:
    """The argv that runs ``inner`` inside ``image`` (pure).

    - apptainer/singularity: ``apptainer exec [--nv] --cleanenv --bind a,b --env K=V ...
      [--pwd DIR] IMAGE inner...``. ``--cleanenv`` keeps the host's environment (modules,
      conda, a different HF_HOME) out; everything the job needs comes through ``env``.
    - docker/podman: ``docker run --rm --network host --ipc host [--gpus all] -v SRC:DST ...
      -e K=V ... [-w DIR] [--user U] --entrypoint inner[0] IMAGE inner[1:]``. The image's
      entrypoint is ``glamhpc``, so the first word of ``inner`` replaces it (otherwise
      ``torchrun ...`` would run as ``glamhpc torchrun ...``). Host networking lets the
      rendezvous address of the node work unchanged; ``--ipc host`` gives torch the shared
      memory that the default 64 MB /dev/shm lacks.

    ``engine`` None picks by the image name (a .sif file or Apptainer URI: apptainer; else
    docker). ``binds`` are ``SRC[:DST[:ro]]`` (DST defaults to SRC; duplicates dropped).
    ``env`` is passed explicitly (see ``forwarded_env``); values may contain any character.
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
    env = dict(env or {})
    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ContainerError(f"bad environment variable name '{key}'")
    if engine in APPTAINER_LIKE:
        cmd = [engine, "exec"]
        if gpus:
            cmd.append("--nv")
        if cleanenv:
            cmd.append("--cleanenv")
        if specs:
            cmd += ["--bind", ",".join(specs)]
        for key, value in env.items():
            cmd += ["--env", f"{key}={value}"]
        if workdir:
            cmd += ["--pwd", workdir]
        return [*cmd, image, *inner]
    cmd = [engine, "run", "--rm", "--network", "host", "--ipc", "host"]
    if gpus:
        # Podman exposes GPUs through CDI; Docker through the NVIDIA runtime hook.
        cmd += ["--device", "nvidia.com/gpu=all"] if engine == "podman" else ["--gpus", "all"]
    for spec in specs:
        cmd += ["--volume", spec]
    for key, value in env.items():
        cmd += ["--env", f"{key}={value}"]
    if workdir:
        cmd += ["--workdir", workdir]
    if user:
        cmd += ["--user", user]
    return [*cmd, "--entrypoint", inner[0], image, *inner[1:]]


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
