"""The run directory: the one module that knows its layout, its name rules and its markers.

``<train.run_root>/<experiment>/<run name>/`` holds::

    config.yaml      the fully resolved config the run was started with (resume refuses changes)
    checkpoints/     u0000010/ ... + `latest` (glamhpc.checkpoint)
    logs/            the metrics journal (glamhpc.tracking)
    model/           the final export that `glamhpc eval` loads
    launch/          what launchers write: config snapshot, submitit files, node and rank logs
    mlflow_run_id    the MLflow run this directory logs to
    DONE             written last by a finished run (its content: frames trained)
    PREEMPTED        written by a run stopped on a signal (its content: the update reached)

Torch-free and minigrid-free: launchers on login nodes, the sbatch template and the trainer all
ask this module, so that a change of layout is one change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from glamhpc.config import Config, ConfigError, config_from_dict, read_yaml, to_dict, to_yaml
from glamhpc.fsutil import atomic_write_text

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
MODEL = "model"
LAUNCH = "launch"
DONE_MARKER = "DONE"
PREEMPTED_MARKER = "PREEMPTED"

#: Config sections whose change makes a resumed run a different experiment.
FROZEN_ON_RESUME = ("seed", "env", "model", "policy", "ppo")

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_run_name(name: str) -> str:
    """A run name becomes one path component (and a Slurm job name): no separators, no dot
    first, no whitespace. Returns the name; raises ConfigError naming the rule."""
    if not name or len(name) > 200 or not _NAME.fullmatch(name):
        raise ConfigError(f"bad run name '{name}': use letters, digits, '-', '_' or '.'")
    return name


def default_run_name(cfg: Config, now: datetime | None = None) -> str:
    """``<name>-s<seed>-<UTC timestamp>``: what an unnamed run is called."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return f"{cfg.name}-s{cfg.seed}-{stamp}"


def run_dir_path(cfg: Config, run_name: str) -> Path:
    """``<run_root>/<experiment>/<run_name>`` (relative when run_root is)."""
    return Path(cfg.train.run_root) / cfg.experiment / check_run_name(run_name)


@dataclass(frozen=True)
class RunDir:
    """One run's directory. Cheap to build; touches the disk only in the methods that say so."""

    path: Path

    @classmethod
    def of(cls, cfg: Config, run_name: str, workdir: Path | None = None) -> RunDir:
        path = run_dir_path(cfg, run_name)
        return cls(path if workdir is None else (workdir / path).resolve())

    # -------------------------------------------------------------- layout
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def launch(self) -> Path:
        return self.path / LAUNCH

    @property
    def launch_config(self) -> Path:
        """The resolved config snapshot a launcher hands its ranks."""
        return self.launch / CONFIG_FILE

    @property
    def torchrun_logs(self) -> Path:
        """torchrun's per-rank logs (one folder per job and node, or per local launch, below)."""
        return self.launch / "torchrun"

    @property
    def done_marker(self) -> Path:
        return self.path / DONE_MARKER

    @property
    def preempted_marker(self) -> Path:
        return self.path / PREEMPTED_MARKER

    # -------------------------------------------------------------- state
    def is_done(self) -> bool:
        return self.done_marker.exists()

    def has_checkpoints(self) -> bool:
        return self.checkpoints.exists()

    def preempted_since(self, started: float) -> bool:
        """PREEMPTED was written at or after ``started`` (a time.time() value)."""
        try:
            return self.preempted_marker.stat().st_mtime >= started
        except FileNotFoundError:
            return False

    def mark_done(self, frames: int) -> None:
        atomic_write_text(self.done_marker, f"{frames}\n")

    def mark_preempted(self, update: int) -> None:
        atomic_write_text(self.preempted_marker, f"{update}\n")

    # -------------------------------------------------------------- config
    def check_resume(self, cfg: Config) -> None:
        """Refuse to resume a run whose experiment-defining sections changed."""
        if not self.config_file.is_file():
            return
        saved = to_dict(config_from_dict(read_yaml(self.config_file)))
        current = to_dict(cfg)
        changed = [k for k in FROZEN_ON_RESUME if saved.get(k) != current.get(k)]
        if changed:
            raise ConfigError(
                f"run directory {self.path} was started with a different config "
                f"(changed: {', '.join(changed)}); use a new --run-name to start a new run"
            )

    def prepare(self, cfg: Config) -> None:
        """Check a resume, create the folders, write the resolved config (rank 0 only)."""
        self.check_resume(cfg)
        self.logs.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_file, to_yaml(cfg))

    def write_launch_snapshot(self, cfg: Config) -> Path:
        """The resolved config a launcher hands its ranks (later YAML edits do not leak)."""
        self.launch.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.launch_config, to_yaml(cfg))
        return self.launch_config
