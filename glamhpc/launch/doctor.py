"""`glamhpc doctor`: check a login or compute node for what glamhpc jobs need, with the fix.

Each check returns a ``Check`` (ok or not, required or advisory, what was seen, how to fix it).
What is *required* depends on the config: sbatch only matters for ``launch.executor: slurm``,
a container engine only with ``launch.container``, GPUs only where ranks will run on them, a
complete model cache for any model that is not built locally. Side effects (PATH lookups,
subprocesses, HTTP) go through small injectable callables so that tests drive every branch
with real processes and servers rather than mocks of this module.

Nothing here imports torch at module level (only the GPU probe does, when GPUs matter): model
files are looked up with the torch-free ``glamhpc.policy.hubcache``, the tracking store is the
one ``glamhpc.tracking.uri`` resolves for jobs.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from glamhpc import __version__, containers
from glamhpc.config import Config
from glamhpc.policy import hubcache
from glamhpc.tracking.uri import default_uri, is_http, resolve_uri, sqlite_path

Which = Callable[[str], str | None]


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "missing" if self.required else "warn"


def _run(cmd: list[str], timeout: float = 10.0) -> tuple[int, str]:
    """Return code and combined output; a missing or hanging program is a failure, not a crash."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


def _first_line(text: str) -> str:
    return text.splitlines()[0].strip() if text.strip() else ""


# ----------------------------------------------------------------------------- checks


def check_python() -> Check:
    return Check(
        "glamhpc",
        True,
        f"glamhpc {__version__}, Python {platform.python_version()} ({sys.executable})",
        required=False,
    )


def check_slurm(cfg: Config, which: Which = shutil.which) -> Check:
    required = cfg.launch.executor == "slurm"
    path = which("sbatch")
    if path is None:
        return Check(
            "slurm (sbatch)",
            False,
            "sbatch not on PATH",
            "load the Slurm module (`module load slurm`) or run from a login node; "
            "for a local cluster see slurm/ (scripts that bring one up)",
            required=required,
        )
    rc, out = _run([path, "--version"])
    detail = _first_line(out) if rc == 0 else f"{path} (--version failed: {_first_line(out)})"
    fix = "" if rc == 0 else "Slurm is installed but not configured or its controller is down"
    return Check("slurm (sbatch)", rc == 0, detail, fix, required)


def check_container(
    cfg: Config,
    which: Which = shutil.which,
    runner: Callable[[list[str]], tuple[int, str]] = _run,
) -> Check:
    image = cfg.launch.container
    found = containers.find_engines(containers.RUN_PREFERENCE, which)
    if image is None:
        if not found:
            return Check(
                "container engine",
                False,
                "none of apptainer, singularity, docker, podman on PATH",
                "only needed for `--container IMAGE`: `module load apptainer` on HPC",
                required=False,
            )
        shown = []
        for name in found:
            if name == "docker" and runner(["docker", "info", "--format", "x"])[0] != 0:
                name += " (daemon not reachable)"
            shown.append(name)
        return Check("container engine", True, "found: " + ", ".join(shown), required=False)
    engine = containers.engine_for_image(image)
    try:  # GLAMHPC_CONTAINER_ENGINE picks one engine of the image's kind, as jobs do
        candidates = list(containers.run_candidates(image, os.environ))
    except containers.ContainerError as exc:
        return Check("container engine", False, str(exc), f"unset {containers.ENGINE_VARIABLE}")
    usable = [e for e in candidates if e in found]
    if not usable:
        return Check(
            "container engine",
            False,
            f"launch.container={image} needs {' or '.join(candidates)}, not on PATH",
            "`module load apptainer` (HPC) or install Docker; or unset launch.container",
        )
    name = usable[0]
    if engine != "docker":
        local = not image.startswith(("oras://", "library://", "docker://", "shub://"))
        if local and not Path(image).is_file():
            return Check(
                "container engine",
                False,
                f"{name} found, but the image {image} does not exist",
                f"build it: glamhpc build --engine {name} --tag {image}",
            )
        rc, out = runner([name, "--version"])
        return Check("container engine", rc == 0, f"{_first_line(out)}; image {image}")
    # The docker CLI can exist without a reachable daemon (remote contexts, CI images); podman
    # has no daemon, but its info fails just as clearly on a broken storage or configuration.
    version = "{{.Version.Version}}" if name == "podman" else "{{.ServerVersion}}"
    rc, out = runner([name, "info", "--format", version])
    if rc != 0:
        return Check(
            "container engine",
            False,
            f"{name} CLI found but the daemon is not reachable: {_first_line(out)}",
            f"start the {name} daemon/service (or set DOCKER_HOST)",
        )
    rc, out = runner([name, "image", "inspect", "--format", "{{.Id}}", image])
    if rc != 0:
        return Check(
            "container engine",
            False,
            f"{name} is up, but image {image} is not there ({_first_line(out)})",
            f"build it: glamhpc build --engine {name} --tag {image}",
        )
    return Check("container engine", True, f"{name}; image {image} present")


def gpu_count_torch() -> tuple[int, str]:
    """GPUs torch can use here, and a note on why not when none."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a hard dependency
        return 0, f"torch not importable: {exc}"
    if not torch.cuda.is_available():
        build = "CPU-only torch build" if torch.version.cuda is None else "no usable CUDA device"
        return 0, f"torch {torch.__version__}: {build}"
    return torch.cuda.device_count(), f"torch {torch.__version__} (CUDA {torch.version.cuda})"


def check_gpus(
    cfg: Config,
    environ: Mapping[str, str] | None = None,
    which: Which = shutil.which,
    torch_probe: Callable[[], tuple[int, str]] = gpu_count_torch,
    runner: Callable[[list[str]], tuple[int, str]] = _run,
) -> Check:
    env = os.environ if environ is None else environ
    wanted = cfg.launch.gpus_per_node
    # On a login node GPUs are expected to be absent: only demand them where ranks will run.
    here = cfg.launch.executor == "local" or "SLURM_JOB_ID" in env
    required = wanted > 0 and here
    driver_gpus: int | None = None  # None: no nvidia-smi to ask
    detail = ""
    if which("nvidia-smi"):
        rc, out = runner(["nvidia-smi", "-L"])
        listed = [line for line in out.splitlines() if line.startswith("GPU ")]
        driver_gpus = len(listed) if rc == 0 else 0
        detail = f"; nvidia-smi lists {driver_gpus}" if rc == 0 else "; nvidia-smi failed"
    if wanted == 0 and not driver_gpus:
        # Importing torch costs seconds; without GPUs wanted or present there is nothing to ask.
        note = "no NVIDIA driver (nvidia-smi not found)" if driver_gpus is None else "no GPU"
        return Check("GPUs", True, note + " (config uses CPU ranks)", required=False)
    count, note = torch_probe()
    detail = f"{count} usable by {note}{detail}"
    if wanted == 0:
        return Check("GPUs", True, detail + " (config uses CPU ranks)", required=False)
    if count >= wanted:
        return Check("GPUs", True, f"{detail} (need {wanted})", required=required)
    if driver_gpus:
        fix = "the driver sees GPUs but torch does not: install a CUDA torch or use the image"
    elif not here:
        fix = "expected on a login node; check a compute node: srun --gres=gpu:1 glamhpc doctor"
    else:
        fix = "request GPUs (--gres=gpu:N) or set launch.gpus_per_node: 0 for CPU ranks"
    return Check("GPUs", False, f"{detail} (need {wanted})", fix, required)


def check_model(cfg: Config) -> Check:
    """The configured model must load offline on compute nodes (no internet there)."""
    model = cfg.model
    name = model.path or model.name
    if model.path is not None or Path(model.name).is_dir():
        folder = Path(name)
        if not folder.is_dir():
            return Check("model cache", False, f"model.path {folder} does not exist", _fetch(cfg))
        missing = hubcache.missing_model_files(folder)
        if missing:
            return Check("model cache", False, f"{folder} lacks {', '.join(missing)}", _fetch(cfg))
        return Check("model cache", True, f"{folder} is complete")
    if model.name == hubcache.TINY_T5:
        builds = hubcache.tiny_t5_builds(model.cache_dir)
        root = hubcache.glamhpc_cache_root(model.cache_dir)
        where = f"cached in {builds[-1]}" if builds else f"built under {root} on first use"
        return Check("model cache", True, f"tiny-t5 needs no download; {where}")
    if model.init == "random":  # embeddings_only reads the pretrained weights' embeddings
        return Check(
            "model cache", True, f"{model.name}: random init (init: random)", required=False
        )
    found = hubcache.inspect_cached_model(model.name, model.cache_dir)
    if found.complete:
        return Check("model cache", True, f"{model.name} complete in {found.snapshot}")
    return Check(
        "model cache",
        False,
        f"{model.name}: missing {', '.join(found.missing)}",
        _fetch(cfg),
    )


def _fetch(cfg: Config) -> str:
    cache = f" --cache {cfg.model.cache_dir}" if cfg.model.cache_dir else ""
    return (
        f"on a node with internet: glamhpc models prefetch {cfg.model.name}{cache} "
        "(shared filesystem), or set model.path to a complete local copy"
    )


def check_offline(cfg: Config, environ: Mapping[str, str] | None = None) -> Check:
    env = os.environ if environ is None else environ
    value = env.get("HF_HUB_OFFLINE", "")
    offline = hubcache.is_offline_env(env)
    needs_hub = cfg.model.name != hubcache.TINY_T5 and cfg.model.path is None
    if offline or not needs_hub:
        return Check("HF offline mode", True, f"HF_HUB_OFFLINE={value or '(unset)'}", "", False)
    return Check(
        "HF offline mode",
        False,
        "HF_HUB_OFFLINE is not set: jobs may try the hub and hang on nodes without internet",
        "export HF_HUB_OFFLINE=1 in job environments (the container images set it)",
        required=False,
    )


def http_probe(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """GET ``url``; any HTTP answer below 500 means a server is there."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return True, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return exc.code < 500, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(reason)


def check_mlflow(
    cfg: Config,
    environ: Mapping[str, str] | None = None,
    probe: Callable[[str], tuple[bool, str]] = http_probe,
) -> Check:
    if not cfg.tracking.enabled:
        return Check("MLflow", True, "tracking disabled in the config", required=False)
    # The store jobs will use, resolved as the launcher and tracker do (config, then
    # $MLFLOW_TRACKING_URI, then ./mlflow.db; relative SQLite paths made absolute).
    uri = resolve_uri(cfg.tracking.uri, environ)
    if is_http(uri):
        ok, note = probe(uri.rstrip("/") + "/health")
        if ok:
            return Check("MLflow", True, f"{uri} answers ({note})")
        return Check(
            "MLflow",
            False,
            f"{uri} unreachable: {note}",
            "start the tracking server (mlflow server --host ... --port ...) or fix "
            "tracking.uri / MLFLOW_TRACKING_URI; compute nodes must reach it too",
        )
    if uri.startswith("sqlite:///"):
        db = sqlite_path(uri)
        if db is None:  # sqlite:///:memory: keeps nothing, but needs no folder either
            return Check("MLflow", True, f"{uri} (in memory)")
        folder = db.parent
        # Say when it is the default: that store then depends on the working folder.
        note = "; MLflow's default sqlite:///mlflow.db" if uri == default_uri() else ""
        if _writable(folder):
            return Check("MLflow", True, f"{uri} (folder {folder} writable{note})")
        return Check(
            "MLflow",
            False,
            f"{uri}: folder {folder} is not writable{note}",
            "point tracking.uri at a writable shared folder or an MLflow server",
        )
    if uri.startswith("file:") or "://" not in uri:
        return Check(
            "MLflow",
            False,
            f"{uri}: file stores are refused by MLflow 3 unless MLFLOW_ALLOW_FILE_STORE=true",
            "use sqlite:///path/mlflow.db or an MLflow server",
        )
    return Check("MLflow", True, f"{uri} (not probed)", required=False)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".glamhpc-doctor-"):
            pass
    except OSError:
        return False
    return True


def check_run_dir(cfg: Config) -> Check:
    root = Path(cfg.train.run_root)
    if _writable(root):
        return Check("run dir", True, f"{root.resolve()} writable")
    return Check(
        "run dir",
        False,
        f"{root} is not writable",
        "set train.run_root to a writable folder on the shared filesystem",
    )


def run_checks(
    cfg: Config,
    *,
    environ: Mapping[str, str] | None = None,
    which: Which = shutil.which,
    torch_probe: Callable[[], tuple[int, str]] = gpu_count_torch,
    http: Callable[[str], tuple[bool, str]] = http_probe,
) -> list[Check]:
    """All checks for ``cfg``, in the order the table shows them."""
    return [
        check_python(),
        check_slurm(cfg, which),
        check_container(cfg, which),
        check_gpus(cfg, environ, which, torch_probe),
        check_model(cfg),
        check_offline(cfg, environ),
        check_mlflow(cfg, environ, http),
        check_run_dir(cfg),
    ]


def failed(checks: list[Check]) -> list[Check]:
    """The required checks that did not pass (the CLI exits non-zero when there are any)."""
    return [c for c in checks if c.required and not c.ok]
