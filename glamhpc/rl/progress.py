"""The training progress bar: frames, success rate, steps/s, ETA (rank 0; a no-op elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from glamhpc.config import Config


class TrainBar:
    def __init__(self, progress: Any, total: int) -> None:
        self.progress = progress
        self.task = (
            progress.add_task("train", total=total, success="-", sps="-") if progress else None
        )

    def advance_to(self, frames: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=frames)

    def update(self, frames: int, metrics: dict[str, float]) -> None:
        if self.progress is None:
            return
        success = metrics.get("success_rate")
        self.progress.update(
            self.task,
            completed=frames,
            success=f"{success:.2f}" if success is not None else "-",
            sps=f"{metrics['env_steps_per_s']:.0f}",
        )


@contextmanager
def train_bar(enabled: bool, cfg: Config) -> Iterator[TrainBar]:
    if not enabled:
        yield TrainBar(None, 0)
        return
    from glamhpc.ui.progress import progress_bar

    total = cfg.ppo.total_frames
    if cfg.train.max_updates:
        total = min(total, cfg.train.max_updates * cfg.ppo.steps_per_env * cfg.env.num_envs)
    fields = ("success {task.fields[success]}", "{task.fields[sps]} steps/s")
    with progress_bar("frames", *fields) as progress:
        yield TrainBar(progress, total)
