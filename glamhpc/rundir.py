"""The run directory: the one module that knows its layout, its name rules and its markers.

``<train.run_root>/<experiment>/<run name>/`` holds::

    config.yaml      the fully resolved config the run was started with (resume refuses changes)
    checkpoints/     u0000010/ ... + `latest` (glamhpc.checkpoint)
    logs/            the metrics journal (glamhpc.tracking); train.lock, held while a process
                     trains here (RunLock)
    model/           the final export that `glamhpc eval` loads
    launch/          what launchers write: config snapshot, submitit files, node and rank logs
    mlflow_run_id    the MLflow run this directory logs to
    DONE             written last by a finished run (its content: frames trained)
    PREEMPTED        written by a run stopped on a signal (its content: the update reached)

Every run directory resolves inside ``train.run_root`` (symbolic links included) and is given
the mode ``train.run_dir_mode`` (0700 by default) whenever glamhpc writes into it.

Torch-free and minigrid-free: launchers on login nodes, the sbatch template and the trainer all
ask this module, so that a change of layout is one change.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TextIO

from glamhpc.config import Config, ConfigError, config_from_dict, read_yaml, to_dict, to_yaml
from glamhpc.fsutil import atomic_write_text
from glamhpc.inputs.names import check_name
from glamhpc.secrets import redacted

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
MODEL = "model"
LAUNCH = "launch"
DONE_MARKER = "DONE"
PREEMPTED_MARKER = "PREEMPTED"
TRAIN_LOCK = "train.lock"

#: Config sections whose change makes a resumed run a different experiment.
FROZEN_ON_RESUME = ("seed", "agent", "env", "model", "policy", "ppo", "bc", "symbolic", "drrn")


def check_run_name(name: str) -> str:
    """A run name becomes one path component (and a Slurm job name): the one name rule of
    glamhpc.inputs.names (also applied to config, experiment and sweep names). Returns the
    name; raises ConfigError naming the rule."""
    return check_name(name, "run name")


def run_root(cfg: Config, workdir: Path | None = None) -> Path:
    """``train.run_root`` as an absolute path with its links resolved."""
    return ((workdir or Path.cwd()) / cfg.train.run_root).resolve()


def check_inside(path: Path, root: Path) -> Path:
    """``path`` resolved; ConfigError when it lands outside ``root`` (through a symbolic link:
    names cannot leave it). Nothing is written before this check."""
    real = path.resolve()
    if real == root or not real.is_relative_to(root):
        raise ConfigError(
            f"{path} resolves to {real}, outside the run root {root} (a symbolic link?): "
            "remove the link, or point train.run_root where the runs should go"
        )
    return real


def private_dir(path: Path, mode: int) -> Path:
    """mkdir -p ``path``; the folder itself gets ``mode`` (set explicitly: mkdir's mode is
    masked by the umask). A folder someone else owns is left as it is."""
    path.mkdir(parents=True, exist_ok=True)
    info = path.stat()
    if stat.S_IMODE(info.st_mode) != mode and info.st_uid == os.getuid():
        path.chmod(mode)
    return path


def default_run_name(cfg: Config, now: datetime | None = None) -> str:
    """``<name>-s<seed>-<UTC timestamp>``: what an unnamed run is called."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return f"{cfg.name}-s{cfg.seed}-{stamp}"


def run_dir_path(cfg: Config, run_name: str) -> Path:
    """``<run_root>/<experiment>/<run_name>`` (relative when run_root is); names checked."""
    experiment = check_name(cfg.experiment, "experiment")
    return Path(cfg.train.run_root) / experiment / check_run_name(run_name)


@dataclass(frozen=True)
class RunDir:
    """One run's directory. Cheap to build; touches the disk only in the methods that say so."""

    path: Path

    @classmethod
    def of(cls, cfg: Config, run_name: str, workdir: Path | None = None) -> RunDir:
        """The run's directory, after checking its names and that it resolves inside the run
        root (relative when ``workdir`` is None and run_root is relative)."""
        path = run_dir_path(cfg, run_name)
        real = check_inside((workdir or Path.cwd()) / path, run_root(cfg, workdir))
        return cls(path if workdir is None else real)

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
        private_dir(self.path, cfg.train.run_dir_mode)
        self.logs.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_file, to_yaml(redacted(cfg)))

    def write_launch_snapshot(self, cfg: Config) -> Path:
        """The resolved config a launcher hands its ranks (later YAML edits do not leak)."""
        private_dir(self.path, cfg.train.run_dir_mode)
        self.launch.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.launch_config, to_yaml(cfg))
        return self.launch_config

    def lock(self, mode: int = 0o700) -> RunLock:
        """Hold this run directory for training (see RunLock); creates it with ``mode``."""
        return RunLock(self, mode).acquire()


class RunLock:
    """``flock`` on logs/train.lock, held by the process that trains in the run directory
    (rank 0), tracked or not: two trainers in one directory would overwrite each other's
    checkpoints. The kernel drops the lock when its holder dies, so a crashed or requeued job
    never blocks its successor. Filesystems without ``flock`` leave the lock advisory only.
    """

    def __init__(self, run: RunDir, mode: int = 0o700) -> None:
        self.run = run
        self.mode = mode
        self.path = run.logs / TRAIN_LOCK
        self._fh: TextIO | None = None
        self._created: Path | None = None

    def acquire(self) -> RunLock:
        import fcntl

        missing = [p for p in (self.run.path, *self.run.path.parents) if not p.exists()]
        self._created = missing[-1] if missing else None
        private_dir(self.run.path, self.mode)
        self.path.parent.mkdir(exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = " ".join(fh.read().split())[:200] or "a process that did not say"
            fh.close()
            raise ConfigError(
                f"run directory {self.run.path} is in use by another training process "
                f"({holder}); wait for it to end, or start a new run with another --run-name"
            ) from None
        except OSError:
            pass  # no flock on this filesystem
        fh.seek(0)
        fh.truncate()
        since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        fh.write(f"pid {os.getpid()} on {os.uname().nodename} since {since}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is None:
            return
        # A start that failed before writing anything (a model that is not there) leaves no
        # empty run directory behind. Removed while still locked: no second trainer can be
        # holding this lock file meanwhile.
        created = self._created
        if created is not None and [p for p in created.rglob("*") if not p.is_dir()] == [self.path]:
            shutil.rmtree(created, ignore_errors=True)
        self._fh.close()
        self._fh = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
