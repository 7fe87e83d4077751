"""Creating MLflow runs: params from the config, provenance tags, sweep parents and children.

Runs are created idempotently: every run directory carries a random ``glamhpc.run_uid`` tag, and
creation first looks the uid up, so a crash between "run created" and "run id written to disk"
(or two retries of an offline creation) never leaves two MLflow runs for one run directory.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from hashlib import sha1
from pathlib import Path
from typing import Any

import yaml

from glamhpc import __version__
from glamhpc.config import flatten
from glamhpc.secrets import redact_text
from glamhpc.tracking.uri import TrackingError, client, probe, resolve_uri, short_error, sqlite_path

# MLflow's limits (mlflow.utils.validation); a batch over them is refused as a whole.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
MAX_PARAMS_OR_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
TRUNCATED = "...[truncated]"
"""Marker appended to a param/tag value cut to MLflow's length limit (full config: config.yaml)."""

PARENT_TAG = "mlflow.parentRunId"
RUN_UID_TAG = "glamhpc.run_uid"
JOB_STATE_TAG = "glamhpc.job_state"
"""Job state shown by `glamhpc runs` (RUNNING, COMPLETED, FAILED, KILLED; launchers may add
PENDING, PREEMPTED, REQUEUED)."""
SWEEP_ROLE_TAG = "glamhpc.sweep"
"""``parent`` on a sweep's parent run (report and `runs` use it to tell parents from children)."""
MAIN_SUCCESS_KEY = "Main/success_rate"
"""MLflow key of the main success rate. MLflow 3.17's chart view puts a key in the section named
by what precedes its last '/', lists the named sections in JS sort order (uppercase before
lowercase) and THEN the unprefixed "Model metrics" section, charts sorted by key inside a
section: "Main/" is the first section, ahead of health/*, time/* and the per-task curves."""
TASK_SUCCESS_PREFIX = "success_rate_by_task/"
"""MLflow prefix of the per-task success rates (their own section, after "Main")."""
LEGACY_METRIC_KEYS = {MAIN_SUCCESS_KEY: "success_rate"}
"""What runs logged before the rename call a metric (report and `runs` fall back to it)."""


def mlflow_metric_keys(metrics: Mapping[str, float]) -> dict[str, float]:
    """The trainer's metric dict with MLflow's keys: ``success_rate`` -> MAIN_SUCCESS_KEY,
    ``success_rate/<task>`` -> ``success_rate_by_task/<task>``; everything else unchanged."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "success_rate":
            key = MAIN_SUCCESS_KEY
        elif key.startswith("success_rate/"):
            key = TASK_SUCCESS_PREFIX + key[len("success_rate/") :]
        out[key] = value
    return out


SWEEP_TAG_PREFIX = "sweep."
"""Children carry one ``sweep.<dotted key>`` tag per swept value (the UI's compare view groups
and filters on them)."""

_KEY_OK = re.compile(r"^[/\w.\- :]*$")
_KEY_BAD_CHARS = re.compile(r"[^/\w.\- :]")


def truncate(value: str, limit: int) -> str:
    """Cut ``value`` to ``limit`` characters, marking the cut."""
    return value if len(value) <= limit else value[: limit - len(TRUNCATED)] + TRUNCATED


def safe_key(key: str) -> str:
    """A param/tag key MLflow accepts (alphanumerics, _ - . space / :), at most 250 chars."""
    key = _KEY_BAD_CHARS.sub("_", str(key)).strip("/") or "_"
    return key[:MAX_KEY]


def valid_metric_key(key: str) -> bool:
    """True when MLflow accepts ``key`` as a metric name (checked once per key by the tracker)."""
    if not key or len(key) > MAX_KEY or not _KEY_OK.match(key):
        return False
    norm = os.path.normpath(key)
    return norm == key and norm != "." and not norm.startswith(("..", "/"))


def param_value(value: Any) -> str:
    """How a config leaf is shown as an MLflow param (lists/dicts as compact JSON), secrets
    masked: every param (a run's config, a sweep parent's definition) and every tag value goes
    through here or `clean_tags`, so a secret swept or set anywhere never reaches MLflow."""
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, separators=(",", ":"), default=str)
    else:
        text = str(value)
    return truncate(redact_text(text), MAX_PARAM_VALUE)


def config_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The flattened resolved config as MLflow params (keys made valid, values truncated)."""
    return {safe_key(k): param_value(v) for k, v in flatten(config).items()}


def git_commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the glamhpc source tree, or (None, None) outside a git checkout."""
    src = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return (commit or None), bool(status.strip())


def environment_tags() -> dict[str, str]:
    """Provenance of this process: version, git, host, Slurm job, container image."""
    tags = {
        "glamhpc.version": __version__,
        "mlflow.source.name": "glamhpc",
        "mlflow.source.type": "JOB",
    }
    with contextlib.suppress(KeyError, OSError):  # no passwd entry inside some containers
        tags["mlflow.user"] = getpass.getuser()
    commit, dirty = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["glamhpc.git_dirty"] = str(dirty).lower()
    slurm = {
        "slurm.job_id": "SLURM_JOB_ID",
        "slurm.array_job_id": "SLURM_ARRAY_JOB_ID",
        "slurm.array_task_id": "SLURM_ARRAY_TASK_ID",
        "slurm.restart_count": "SLURM_RESTART_COUNT",
        "slurm.partition": "SLURM_JOB_PARTITION",
    }
    for tag, env in slurm.items():
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    # The one host tag: every node of the job under Slurm, else this machine.
    tags["glamhpc.hosts"] = os.environ.get("SLURM_JOB_NODELIST") or socket.gethostname()
    for env in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER", "GLAMHPC_CONTAINER"):
        if os.environ.get(env):
            tags["container.image"] = os.environ[env]
            break
    if os.environ.get("GLAMHPC_CONTAINER_ID"):
        tags["container.image_id"] = os.environ["GLAMHPC_CONTAINER_ID"]
    detected = detect_container()
    if detected:
        tags["container.detected"] = detected
    with contextlib.suppress(OSError, UnicodeDecodeError):  # not in a glamhpc image
        tags["container.build"] = IMAGE_MARKER.read_text(encoding="utf-8").strip()[:200]
    return tags


IMAGE_MARKER = Path("/etc/glamhpc-image")
"""Written by the Dockerfile and the Apptainer def: ``glamhpc VERSION REVISION`` of the build."""


def detect_container(root: Path = Path("/")) -> str | None:
    """Which engine this process runs under, from what the engines themselves put in every
    container (not from variables a launcher could set on the host): proof a job ran inside."""
    if (root / ".dockerenv").exists():
        return "docker"
    if (root / "run" / ".containerenv").exists():
        return "podman"
    if (root / ".singularity.d").is_dir():
        return "apptainer"
    return None


def config_tags(config: Mapping[str, Any]) -> dict[str, str]:
    """model / level / seed tags straight from the config (the columns users filter on)."""
    tags: dict[str, str] = {}
    model = config.get("model")
    if isinstance(model, Mapping) and model.get("name") is not None:
        tags["model"] = str(model["name"])
    env = config.get("env")
    if isinstance(env, Mapping) and env.get("level") is not None:
        tags["level"] = str(env["level"])
    if config.get("seed") is not None:
        tags["seed"] = str(config["seed"])
    return tags


def clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {
        safe_key(k): truncate(redact_text(str(v)), MAX_TAG_VALUE)
        for k, v in tags.items()
        if v is not None
    }


def sweep_tags(values: Mapping[str, Any]) -> dict[str, str]:
    """Tags for a sweep child: {"ppo.lr": 1e-4} -> {"sweep.ppo.lr": "0.0001"}."""
    return clean_tags({f"{SWEEP_TAG_PREFIX}{k}": param_value(v) for k, v in values.items()})


@dataclass
class MlflowRunSpec:
    """Everything needed to create an MLflow run, storable as JSON for an offline (deferred)
    creation (logs/mlflow_pending_run.json). Not a launch spec: that is
    ``glamhpc.launch.torchrun.RunSpec``."""

    experiment: str
    run_name: str
    run_uid: str
    tags: dict[str, str]
    params: dict[str, str]
    config_yaml: str
    parent_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MlflowRunSpec:
        return cls(**json.loads(text))


def build_spec(
    config: Mapping[str, Any],
    experiment: str,
    run_name: str,
    tags: Mapping[str, Any],
    parent_run_id: str | None,
    run_uid: str,
) -> MlflowRunSpec:
    all_tags = {**config_tags(config), **environment_tags(), **clean_tags(tags)}
    all_tags[RUN_UID_TAG] = run_uid
    all_tags[JOB_STATE_TAG] = "RUNNING"
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    return MlflowRunSpec(
        experiment=experiment,
        run_name=run_name,
        run_uid=run_uid,
        tags=all_tags,
        params=config_params(config),
        config_yaml=yaml.safe_dump(dict(config), sort_keys=False),
        parent_run_id=parent_run_id,
    )


def _slug(name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "experiment"
    return f"{base[:60]}-{sha1(name.encode()).hexdigest()[:8]}"


def get_or_create_experiment(mlflow_client: Any, name: str, uri: str) -> str:
    """Experiment id for ``name``, created if missing (safe against concurrent creators)."""
    from mlflow.exceptions import MlflowException

    exp = mlflow_client.get_experiment_by_name(name)
    if exp is None:
        location = None
        db = sqlite_path(uri)
        if db is not None:
            # MLflow's default puts artifacts under the *current* folder's ./mlruns; next to the
            # database is where users look, and it does not depend on where a job happened to run.
            location = str(db.parent.resolve() / "mlruns" / _slug(name))
        try:
            return str(mlflow_client.create_experiment(name, artifact_location=location))
        except MlflowException as exc:
            # Another array task created it between our lookup and create.
            exp = mlflow_client.get_experiment_by_name(name)
            if exp is None:
                raise TrackingError(
                    f"cannot create MLflow experiment '{name}' at {uri}: {short_error(exc)}"
                ) from None
    if exp.lifecycle_stage != "active":
        raise TrackingError(
            f"MLflow experiment '{name}' at {uri} is deleted; restore it "
            f"(`mlflow experiments restore --experiment-id {exp.experiment_id}`) or choose "
            f"another tracking.experiment"
        )
    return str(exp.experiment_id)


def find_run_by_uid(mlflow_client: Any, experiment_id: str, run_uid: str) -> str | None:
    runs = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_UID_TAG}` = '{run_uid}'", max_results=1
    )
    return runs[0].info.run_id if runs else None


def log_params(mlflow_client: Any, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_OR_TAGS_PER_BATCH):
        mlflow_client.log_batch(run_id, params=items[i : i + MAX_PARAMS_OR_TAGS_PER_BATCH])


def log_tags(mlflow_client: Any, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, v) for k, v in clean_tags(tags).items()]
    for i in range(0, len(items), MAX_PARAMS_OR_TAGS_PER_BATCH):
        mlflow_client.log_batch(run_id, tags=items[i : i + MAX_PARAMS_OR_TAGS_PER_BATCH])


def create_run(mlflow_client: Any, spec: MlflowRunSpec, uri: str) -> str:
    """Create (or find, by uid) the run of ``spec``; log its params, tags and config.yaml."""
    experiment_id = get_or_create_experiment(mlflow_client, spec.experiment, uri)
    run_id = find_run_by_uid(mlflow_client, experiment_id, spec.run_uid)
    if run_id is None:
        # Only the identity tags go into create_run: the rest is batched within MLflow's limits.
        first = {RUN_UID_TAG: spec.run_uid}
        if spec.parent_run_id:
            first[PARENT_TAG] = spec.parent_run_id
        run = mlflow_client.create_run(experiment_id, run_name=spec.run_name, tags=first)
        run_id = run.info.run_id
    log_tags(mlflow_client, run_id, spec.tags)
    # Re-logging an identical param value is allowed by MLflow, so a retried creation is safe.
    log_params(mlflow_client, run_id, spec.params)
    mlflow_client.log_text(run_id, spec.config_yaml, "config.yaml")
    return str(run_id)


# ----------------------------------------------------------------------------- sweeps


def create_parent_run(
    experiment: str,
    name: str,
    uri: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Create a sweep's parent run (status RUNNING) and return its id.

    ``params`` typically holds the sweep definition (base config flattened plus the swept lists);
    children are started with ``Tracker.start(..., parent_run_id=<this id>)`` in the same
    experiment, which is what makes MLflow's UI nest them under the parent.
    """
    resolved = resolve_uri(uri)
    probe(resolved)
    mlflow_client = client(resolved)
    experiment_id = get_or_create_experiment(mlflow_client, experiment, resolved)
    all_tags = {
        **environment_tags(),
        **clean_tags(tags or {}),
        SWEEP_ROLE_TAG: "parent",
        JOB_STATE_TAG: "RUNNING",
    }
    run = mlflow_client.create_run(experiment_id, run_name=name)
    run_id = str(run.info.run_id)
    log_tags(mlflow_client, run_id, all_tags)
    if params:
        log_params(mlflow_client, run_id, {safe_key(k): param_value(v) for k, v in params.items()})
    return run_id


def finalize_parent(run_id: str, status: str = "FINISHED", uri: str | None = None) -> None:
    """Mark a sweep parent terminated (FINISHED when all children are, else FAILED/KILLED)."""
    _check_status(status)
    resolved = resolve_uri(uri)
    mlflow_client = client(resolved)
    state = {"FINISHED": "COMPLETED"}.get(status, status)
    log_tags(mlflow_client, run_id, {JOB_STATE_TAG: state})
    mlflow_client.set_terminated(run_id, status=status, end_time=int(time.time() * 1000))


TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


def _check_status(status: str) -> None:
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status must be one of {', '.join(TERMINAL_STATUSES)}, got {status!r}")
