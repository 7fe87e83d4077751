"""The run machinery of a baseline agent, around the agent's own update.

What GLAM's trainer does for a run, for any agent's learner: the run directory (config, DONE /
PREEMPTED markers; the CLI holds its lock), checkpoints through `rl.state` (model + optimizer +
env states + counters + history, plus the agent's own files and state entries: atomic,
verified, keep-N, exact resume), the MLflow run of `rl.run_tracking` (GLAM's metric keys, frames
as the step, an ``agent`` tag), the per-update progress line and ``logs/progress.json``
(`rl.progress`), and the stop signals (`rl.signals`: a Slurm USR2/TERM saves a checkpoint and
stops between updates, every rank after the same update; the requeued job resumes).

`AgentRun` is one rank of such a run (BC trains DDP replicas with it); `OneRankRun` is an agent
whose learner is one process (DRRN, Symbolic-PPO), refused in a world of several ranks. A
subclass supplies `build` (network and optimizer), `one_update` (its rollout and learning step)
and `export`; the hooks below default to PPO's frame accounting and stopping rule.
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from glamhpc.agents import one_rank_problem
from glamhpc.checkpoint import Checkpointer
from glamhpc.config import Config, ConfigError
from glamhpc.distributed import DistContext
from glamhpc.distributed.context import pick_device
from glamhpc.rl import state
from glamhpc.rl.build import build_envs, seed_everything
from glamhpc.rl.entry import run_rank
from glamhpc.rl.ppo import NonFiniteError
from glamhpc.rl.progress import train_progress
from glamhpc.rl.run_tracking import finish_tracking, start_tracker
from glamhpc.rl.signals import SignalFlag
from glamhpc.rundir import DONE_MARKER, RunDir, default_run_name
from glamhpc.tracking import Tracker
from glamhpc.tracking.runs import mlflow_metric_keys


class AgentRun(ABC):
    """One rank of an agent's run; subclasses implement the agent, `run` trains it."""

    #: Whether ``tracking.log_checkpoints`` uploads checkpoints to MLflow (off for LLM-sized ones).
    upload_checkpoints: ClassVar[bool] = True

    def __init__(self, cfg: Config, run_name: str | None, ctx: DistContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.rundir = RunDir.of(cfg, ctx.broadcast_object(run_name or default_run_name(cfg)))
        self.env_offset, self.num_envs_local = ctx.env_slice(cfg.env.num_envs)
        seed_everything(cfg)
        self.envs = build_envs(cfg, self.env_offset, self.num_envs_local)
        self.checkpointer = Checkpointer(
            self.rundir.checkpoints, cfg.train.keep_checkpoints, ctx.rank, ctx.barrier
        )
        self.counters = state.Counters()
        self.history: list[dict[str, float]] = []
        self.tracker: Tracker | None = None

    # ------------------------------------------------------------------ the agent
    @abstractmethod
    def build(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The network and its optimizer (called after the run directory is prepared)."""

    @abstractmethod
    def one_update(self) -> dict[str, float]:
        """Collect and learn once; this update's metrics (rank-independent)."""

    @abstractmethod
    def export(self, folder: Path) -> None:
        """Rank 0: the final model for `glamhpc eval`, manifest written last."""

    def check_update(self, metrics: dict[str, float]) -> None:
        """Raise NonFiniteError on a broken update (nothing by default)."""
        return None

    def frames_in(self, metrics: dict[str, float]) -> int:
        """Frames an update adds to the run's axis: ``steps_per_env`` steps of every env."""
        return self.cfg.ppo.steps_per_env * self.cfg.env.num_envs

    def more_to_do(self) -> bool:
        max_updates = self.cfg.train.max_updates
        return self.counters.frames < self.cfg.ppo.total_frames and (
            max_updates is None or self.counters.update < max_updates
        )

    def progress_plan(self) -> tuple[int, int] | None:
        """(updates, frames per update) when they are not PPO's (`rl.progress`)."""
        return None

    def gather_for_export(self) -> None:
        """Collective on every rank before rank 0 exports (a sharded model's full weights)."""
        return None

    def export_meta(self) -> dict[str, Any]:
        """What every export's ``glamhpc.json`` says of the run (the agent adds its own)."""
        cfg = self.cfg
        return {
            "action_space": cfg.env.action_space,
            "action_texts": self.envs.action_texts,
            "level": cfg.env.level,
            "frames": self.counters.frames,
        }

    def write_extra(self, folder: Path) -> None:
        """Files of the agent's own state inside a checkpoint folder (none by default)."""
        return None

    def read_extra(self, folder: Path) -> None:
        """Load what `write_extra` wrote."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """The agent's own entries in the checkpoint's state.json (`smoke`: what
        `glamhpc train --smoke` checks, read by `launch.smoke`)."""
        return {}

    # ------------------------------------------------------------------ machinery
    def save(self) -> Path:
        path = state.save_checkpoint(
            self.checkpointer,
            self.net,
            self.optimizer,
            self.ctx,
            self.cfg,
            self.counters,
            self.history,
            self.envs.state_dict(),
            write_extra=self.write_extra,
            extra_state=self.extra_state(),
        )
        if self.tracker is not None:
            self.tracker.set_tags({"checkpoint.latest": str(path.resolve())})
            if self.cfg.tracking.log_checkpoints and self.upload_checkpoints:
                self.tracker.log_artifacts(path, f"checkpoints/{path.name}")
        return path

    def _restore(self) -> None:
        restored = state.restore_latest(
            self.checkpointer, self.net, self.optimizer, self.envs, self.ctx, self.read_extra
        )
        if restored is not None:
            self.counters, self.history = restored.counters, restored.history

    def _timed_update(self) -> dict[str, float]:
        start = time.perf_counter()
        metrics = self.one_update()
        self.check_update(metrics)
        elapsed = time.perf_counter() - start
        frames = self.frames_in(metrics)
        self.counters.update += 1
        self.counters.frames += frames
        self.counters.episodes += int(metrics.get("episodes", 0))
        self.counters.wall_seconds += elapsed
        return {
            **metrics,
            "env_steps_per_s": frames / max(elapsed, 1e-9),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "update": float(self.counters.update),
        }

    def run(self, flag: SignalFlag) -> Path:
        """Train to the end or until a signal; returns the run directory."""
        cfg, ctx = self.cfg, self.ctx
        if self.rundir.is_done():
            if ctx.is_main:
                path = self.rundir.path
                print(f"run {path} already finished ({DONE_MARKER} present); nothing to do")
            return self.rundir.path
        if ctx.is_main:
            self.rundir.prepare(cfg)
        ctx.barrier()
        self.net, self.optimizer = self.build()
        self._restore()
        at_start = cfg.train.save_initial and self.counters.update == 0
        if at_start and not state.saved_at(self.checkpointer, 0):
            self.save()
        if ctx.is_main and cfg.tracking.enabled:
            self.tracker = start_tracker(cfg, self.rundir, ctx.world_size)
            self.tracker.set_tags({"agent": cfg.agent})
        preempted = False
        with train_progress(cfg, self.rundir.path, ctx.is_main, self.progress_plan()) as bar:
            bar.advance_to(self.counters.frames)
            while self.more_to_do() and not preempted:
                if ctx.any_flag(flag.received is not None):
                    preempted = True
                    break
                try:
                    metrics = self._timed_update()
                except NonFiniteError as exc:
                    if self.tracker is not None:
                        self.tracker.set_tags({"health.error": str(exc)})
                        self.tracker.finish("FAILED")
                    raise
                self.history.append({"frames": self.counters.frames, **metrics})
                if self.tracker is not None:
                    self.tracker.log_metrics(mlflow_metric_keys(metrics), step=self.counters.frames)
                bar.update(self.counters.update, self.counters.frames, metrics)
                preempted = ctx.any_flag(flag.received is not None)
                if self.counters.update % cfg.train.checkpoint_every == 0 or preempted:
                    self.save()
        self._close(preempted)
        return self.rundir.path

    def _close(self, preempted: bool) -> None:
        if not state.saved_at(self.checkpointer, self.counters.update):
            self.save()  # a stop comes between updates: the envs are at an update boundary
        if not preempted:
            self.gather_for_export()
        if self.ctx.is_main:
            if preempted:
                self.rundir.mark_preempted(self.counters.update)
            else:
                self.export(self.rundir.model)
                self.rundir.mark_done(self.counters.frames)
            finish_tracking(self.tracker, self.cfg, self.rundir, preempted)
        self.ctx.barrier()


def train_ranks(
    run: Callable[[Config, str | None, DistContext], AgentRun], cfg: Config, run_name: str | None
) -> Path:
    """Train this rank's part of one run of ``run``'s agent (`rl.entry.run_rank`)."""
    return run_rank(cfg, lambda ctx, flag: run(cfg, run_name, ctx).run(flag))


class OneRankRun(AgentRun):
    """An agent whose learner is one process: its name is in `agents.ONE_RANK_AGENTS`."""

    def __init__(self, cfg: Config, run_name: str | None, ctx: DistContext | None = None) -> None:
        _refuse_several_ranks(cfg)
        super().__init__(cfg, run_name, ctx or DistContext(device=pick_device(cfg.model.device)))

    def check_update(self, metrics: dict[str, float]) -> None:
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteError(
                f"{self.cfg.agent}: {bad[0]} is {metrics[bad[0]]} at update "
                f"{self.counters.update + 1}; the run stopped, its last checkpoint in "
                f"{self.checkpointer.folder} is intact: resume with a lower ppo.lr"
            )


def train_one_rank(run: type[OneRankRun], cfg: Config, run_name: str | None) -> Path:
    """Train one run of ``run``'s agent; a world of several ranks is refused before it joins."""
    _refuse_several_ranks(cfg)
    return train_ranks(run, cfg, run_name)


def _refuse_several_ranks(cfg: Config) -> None:
    problem = one_rank_problem(cfg.agent, int(os.environ.get("WORLD_SIZE", "1")))
    if problem:
        raise ConfigError(problem)
