"""Training progress as rank 0 reports it: a rich bar on a terminal, otherwise ONE line per update
on stdout, and always ``logs/progress.json`` in the run directory.

The line (stable format, flushed; what `glamhpc logs JOB --follow` shows of a job)::

    update 12/80 frames 6144/40960 success 0.42 return 0.31 steps/s 140 ETA 4m12s

``success`` and ``return`` are ``-`` while no episode has ended in the update. ``ETA`` is the
remaining updates at this start's mean seconds per update. The file holds the same facts as JSON
(:class:`Progress`), written atomically every update, so that `glamhpc jobs` reads a run's
progress from its directory without asking MLflow. Torch-free: the job table imports it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from glamhpc.config import Config
from glamhpc.fsutil import atomic_write_json
from glamhpc.rundir import LOGS

PROGRESS_FILE = "progress.json"


def progress_path(run_dir: Path) -> Path:
    return run_dir / LOGS / PROGRESS_FILE


def duration(seconds: float) -> str:
    """``42s``, ``4m12s``, ``3h05m`` (short and unambiguous in a log line)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@dataclass(frozen=True)
class Progress:
    """The latest update of a run, as the line and logs/progress.json state it."""

    update: int
    updates: int
    frames: int
    total_frames: int
    success_rate: float | None
    return_mean: float | None
    steps_per_s: float
    eta_s: float
    time: str
    """When the update ended (UTC, ISO 8601)."""

    def line(self) -> str:
        return (
            f"update {self.update}/{self.updates} frames {self.frames}/{self.total_frames} "
            f"success {_num(self.success_rate, '.2f')} return {_num(self.return_mean, '.2f')} "
            f"steps/s {self.steps_per_s:.0f} ETA {duration(self.eta_s)}"
        )

    def cell(self) -> str:
        """The `glamhpc jobs` progress cell: ``12/80 upd, 6144 fr, succ 0.42``."""
        return (
            f"{self.update}/{self.updates} upd, {self.frames} fr, "
            f"succ {_num(self.success_rate, '.2f')}"
        )


def read_progress(run_dir: str | Path) -> Progress | None:
    """The run's latest progress, or None (no update yet, or a file this version cannot read:
    `glamhpc jobs` shows what it can rather than fail on one odd file)."""
    try:
        data = json.loads(progress_path(Path(run_dir)).read_text())
        update, updates, frames, total = (
            data[k] for k in ("update", "updates", "frames", "total_frames")
        )
        if not all(type(v) is int for v in (update, updates, frames, total)):
            return None
        success, ret, sps, eta = (
            data[k] for k in ("success_rate", "return_mean", "steps_per_s", "eta_s")
        )
        if not all(v is None or type(v) in (int, float) for v in (success, ret, sps, eta)):
            return None
        if not isinstance(data["time"], str):
            return None
        return Progress(
            update=update,
            updates=updates,
            frames=frames,
            total_frames=total,
            success_rate=None if success is None else float(success),
            return_mean=None if ret is None else float(ret),
            steps_per_s=float(sps or 0),
            eta_s=float(eta or 0),
            time=data["time"],
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None


def planned_updates(cfg: Config) -> int:
    """Updates the run will make in all: the trainer stops at total_frames or max_updates."""
    per_update = cfg.ppo.steps_per_env * cfg.env.num_envs
    updates = math.ceil(cfg.ppo.total_frames / per_update)
    return min(updates, cfg.train.max_updates) if cfg.train.max_updates else updates


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


class TrainProgress:
    """Rank 0's report of each update (bar or line, and the file); a no-op on other ranks."""

    def __init__(
        self, cfg: Config, run_dir: Path | None, bar: Any, plan: tuple[int, int] | None = None
    ) -> None:
        self.run_dir = run_dir
        self.bar = bar
        # ``plan``: (updates, frames per update) of a loop whose update is not a PPO rollout.
        self.updates, self.frames_per_update = plan or (
            planned_updates(cfg),
            cfg.ppo.steps_per_env * cfg.env.num_envs,
        )
        total = self.total_frames
        self.task = bar.add_task("train", total=total, success="-", sps="-") if bar else None
        self._started = time.monotonic()
        self._first_update: int | None = None

    @property
    def total_frames(self) -> int:
        return self.updates * self.frames_per_update

    def advance_to(self, frames: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=frames)

    def update(self, update: int, frames: int, metrics: Mapping[str, float]) -> None:
        if self.run_dir is None:
            return
        if self._first_update is None:
            self._first_update = update - 1
        done_here = update - self._first_update
        per_update = (time.monotonic() - self._started) / max(1, done_here)
        progress = Progress(
            update=update,
            updates=self.updates,
            frames=frames,
            total_frames=self.total_frames,
            success_rate=_finite(metrics.get("success_rate")),
            return_mean=_finite(metrics.get("return_mean")),
            steps_per_s=float(metrics.get("env_steps_per_s", 0.0)),
            eta_s=per_update * max(0, self.updates - update),
            time=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        atomic_write_json(progress_path(self.run_dir), asdict(progress))
        if self.bar is None:
            print(progress.line(), flush=True)
            return
        self.bar.update(
            self.task,
            completed=frames,
            success=_num(progress.success_rate, ".2f"),
            sps=f"{progress.steps_per_s:.0f}",
        )


@contextmanager
def train_progress(
    cfg: Config, run_dir: Path, main: bool, plan: tuple[int, int] | None = None
) -> Iterator[TrainProgress]:
    """Rank 0 (``main``): the rich bar when ``train.progress`` is on and stdout is a terminal,
    otherwise one line per update (a job's log is no terminal: a bar would print only once, at
    the end). Other ranks get a no-op."""
    if not main:
        yield TrainProgress(cfg, None, None, plan)
        return
    if not (cfg.train.progress and sys.stdout.isatty()):
        yield TrainProgress(cfg, run_dir, None, plan)
        return
    from glamhpc.ui.progress import progress_bar

    fields = ("success {task.fields[success]}", "{task.fields[sps]} steps/s")
    with progress_bar("frames", *fields) as bar:
        yield TrainProgress(cfg, run_dir, bar, plan)
