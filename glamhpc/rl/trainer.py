"""The GLAM training loop: collect a rollout, PPO update, log, checkpoint; resume exactly.

Randomness is stateless wherever it matters: actions come from uniforms keyed by (seed, update,
step, global env) (`policy.sampling`), minibatches from a permutation keyed by (seed, update,
epoch) (`rl.ppo`), and the model runs without dropout both when acting and when updating. Hence
(a) resume is bitwise exact from (weights, optimizer, env states, counters) alone, and (b) N
ranks reproduce a single rank's run: the same global env sees the same episodes and actions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from glamhpc.checkpoint import Checkpointer
from glamhpc.config import Config
from glamhpc.distributed import DistContext, full_state_dict, held_memory, unwrap
from glamhpc.rl import state
from glamhpc.rl.build import build_parts, seed_everything
from glamhpc.rl.entry import run_rank
from glamhpc.rl.health import (
    UpdateHealth,
    require_finite_weights,
    stall_warning,
    stopped_message,
)
from glamhpc.rl.metrics import device_peak_flops, update_metrics
from glamhpc.rl.ppo import NonFiniteError, RankSlice, update_from_rollout
from glamhpc.rl.probes import ProbeScorer
from glamhpc.rl.progress import train_progress
from glamhpc.rl.rollout import EpisodeStats, Rollout, RolloutKey, collect
from glamhpc.rl.run_tracking import UPLOAD_CHECKPOINT_PARAMS, finish_tracking, start_tracker
from glamhpc.rl.signals import SignalFlag
from glamhpc.rundir import DONE_MARKER, RunDir, default_run_name
from glamhpc.tracking import Tracker
from glamhpc.tracking.runs import mlflow_metric_keys


class Trainer:
    """One rank of a GLAM run. Build with :func:`train`."""

    def __init__(self, cfg: Config, run_name: str | None, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.run_name: str = ctx.broadcast_object(run_name or default_run_name(cfg))
        self.rundir = RunDir.of(cfg, self.run_name)
        self.run_dir = self.rundir.path
        self.env_offset, self.num_envs_local = ctx.env_slice(cfg.env.num_envs)
        seed_everything(cfg)
        self.parts = parts = build_parts(cfg, ctx, self.env_offset, self.num_envs_local)
        self.envs, self.policy, self.optimizer = parts.envs, parts.policy, parts.optimizer
        self.counters = state.Counters()
        self.history: list[dict[str, float]] = []
        self.checkpointer = Checkpointer(
            self.rundir.checkpoints, cfg.train.keep_checkpoints, ctx.rank, ctx.barrier
        )
        self.tracker: Tracker | None = None
        self.health = UpdateHealth(unwrap(self.policy).named_parameters())
        self.probes = ProbeScorer(cfg, self.run_dir, self.policy, ctx.is_main)
        self._health_warned = False
        peak = device_peak_flops(cfg, ctx.device)
        self._peak_total = peak * ctx.world_size if peak else None

    # ------------------------------------------------------------------ state
    def save(self, env_state: dict[str, Any]) -> Path:
        path = state.save_checkpoint(
            self.checkpointer,
            self.policy,
            self.optimizer,
            self.ctx,
            self.cfg,
            self.counters,
            self.history,
            env_state,
        )
        if self.tracker is not None:
            self.tracker.set_tags({"checkpoint.latest": str(path.resolve())})
            # Small models' checkpoints go to MLflow too; large ones are referenced by path only.
            small = self.parts.num_params <= UPLOAD_CHECKPOINT_PARAMS
            if self.cfg.tracking.log_checkpoints and small:
                self.tracker.log_artifacts(path, f"checkpoints/{path.name}")
        return path

    def _resume(self) -> None:
        restored = state.restore_latest(
            self.checkpointer, self.policy, self.optimizer, self.envs, self.ctx
        )
        if restored is not None:
            self.counters, self.history = restored.counters, restored.history

    # ------------------------------------------------------------------ one update
    def _score(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and values on CPU in fp32 (acting under no_grad, the update with grads)."""
        logprobs, values = self.policy(prompts)
        return logprobs.float().cpu(), values.float().cpu()

    def _collect(self, flag: SignalFlag) -> Rollout | None:
        key = RolloutKey(
            self.cfg.seed, self.counters.update, self.env_offset, self.cfg.env.num_envs
        )
        return collect(
            self._score,
            self.envs,
            self.cfg.ppo.steps_per_env,
            self.num_envs_local,
            key,
            lambda: self.ctx.any_flag(flag.received is not None),
        )

    def _update(self, rollout: Rollout) -> dict[str, float]:
        ranks = RankSlice(
            self.env_offset, self.num_envs_local, self.cfg.env.num_envs, self.ctx.world_size
        )
        self.health.snapshot()
        stats = update_from_rollout(
            self._score,
            self.parts.params,
            self.optimizer,
            rollout.buffer,
            rollout.last_values,
            self.cfg.ppo,
            seed=self.cfg.seed,
            update=self.counters.update,
            ranks=ranks,
            all_reduce_sum=self.ctx.all_reduce_sum,
        )
        # Identical on every rank (replicas, or sums reduced over the shards): all raise together.
        health = self.health.measure(self.ctx.all_reduce_sum)
        require_finite_weights(health)
        # Here, before the next zero_grad, the last minibatch's gradients are still held.
        held = held_memory(self.policy, self.optimizer, self.health.copies, self.ctx.device)
        return {**stats, **health, **held.metrics()}

    def _watch_health(self, metrics: dict[str, float]) -> None:
        """Rank 0: warn once, loudly and in MLflow, when the LLM stopped learning."""
        if self._health_warned or not self.ctx.is_main:
            return
        problem = stall_warning(
            metrics, metrics["lr"], metrics["grad_norm"], self.health.llm_trainable
        )
        if problem is None:
            return
        self._health_warned = True
        update = self.counters.update
        print(f"WARNING (update {update}): {problem}", file=sys.stderr, flush=True)
        if self.tracker is not None:
            self.tracker.set_tags({"health.warning": f"update {update}: {problem}"})

    def _failed(self, exc: NonFiniteError) -> NonFiniteError:
        """The run stops: the bad state is not saved, the last good checkpoint stays `latest`,
        no DONE, no export; MLflow shows FAILED with the reason."""
        message = stopped_message(exc, self.counters.update + 1, self.checkpointer.folder)
        if self.tracker is not None:
            self.tracker.set_tags({"health.error": message})
            self.tracker.finish("FAILED")
        return NonFiniteError(message)

    # ------------------------------------------------------------------ loop
    def run(self, flag: SignalFlag | None = None) -> Path:
        """Train to the end or until a signal; ``flag`` may be installed before the model loads."""
        if flag is None:
            flag = SignalFlag()
            with flag.installed():
                return self.run(flag)
        cfg, ctx = self.cfg, self.ctx
        if self.rundir.is_done():
            if ctx.is_main:
                print(f"run {self.run_dir} already finished ({DONE_MARKER} present); nothing to do")
            return self.run_dir
        if ctx.is_main:
            self.rundir.prepare(cfg)
        ctx.barrier()
        self._resume()
        at_start = cfg.train.save_initial and self.counters.update == 0
        if at_start and not state.saved_at(self.checkpointer, 0):
            self.save(self.envs.state_dict())
        if ctx.is_main and cfg.tracking.enabled:
            self.tracker = start_tracker(cfg, self.rundir, ctx.world_size)
        preempted = False
        env_snapshot: dict[str, Any] = {}
        with train_progress(cfg, self.run_dir, ctx.is_main) as bar:
            bar.advance_to(self.counters.frames)
            while self._more_to_do():
                env_snapshot = self.envs.state_dict()
                if ctx.any_flag(flag.received is not None):  # e.g. signalled while loading
                    preempted = True
                    break
                start, comm_before = time.perf_counter(), ctx.comm_seconds
                rollout = self._collect(flag)
                if rollout is None:
                    preempted = True
                    break
                rollout_s = time.perf_counter() - start
                try:
                    stats = self._update(rollout)
                except NonFiniteError as exc:
                    raise self._failed(exc) from exc
                elapsed = time.perf_counter() - start
                episodes = EpisodeStats.merge(ctx.all_gather_objects(rollout.episodes))
                self.counters.update += 1
                self.counters.frames += cfg.ppo.steps_per_env * cfg.env.num_envs
                self.counters.episodes += len(episodes.success)
                self.counters.wall_seconds += elapsed
                times = {"elapsed": elapsed, "rollout": rollout_s}
                times["comm"] = ctx.comm_seconds - comm_before
                measured = update_metrics(
                    cfg,
                    self.policy,
                    self.parts.shape,
                    self.parts.action_tokens,
                    len(self.envs.action_texts),
                    rollout,
                    episodes,
                    times,
                    self._peak_total,
                )
                lr = float(self.optimizer.param_groups[0]["lr"])
                metrics = {**measured, **stats, "lr": lr, "update": float(self.counters.update)}
                metrics |= self.probes(self.counters.update, not self._more_to_do(), self.tracker)
                self._watch_health(metrics)
                self.history.append({"frames": self.counters.frames, **metrics})
                if self.tracker is not None:
                    self.tracker.log_metrics(mlflow_metric_keys(metrics), step=self.counters.frames)
                bar.update(self.counters.update, self.counters.frames, metrics)
                stop_now = ctx.any_flag(flag.received is not None)
                if self.counters.update % cfg.train.checkpoint_every == 0 or stop_now:
                    self.save(self.envs.state_dict())
                if stop_now:
                    preempted = True
                    break
        self._close(preempted, env_snapshot)
        return self.run_dir

    def _more_to_do(self) -> bool:
        max_updates = self.cfg.train.max_updates
        return self.counters.frames < self.cfg.ppo.total_frames and (
            max_updates is None or self.counters.update < max_updates
        )

    def _close(self, preempted: bool, env_snapshot: dict[str, Any]) -> None:
        """Last checkpoint, markers, export and the tracker's end state."""
        if not state.saved_at(self.checkpointer, self.counters.update):
            # A stop abandons the rollout mid-way: save the env state from its start.
            self.save(env_snapshot if preempted else self.envs.state_dict())
        # Gathering a sharded model's full weights is collective: all ranks, before rank 0 exports.
        full_state = {} if preempted else full_state_dict(self.policy)
        if self.ctx.is_main:
            if preempted:
                self.rundir.mark_preempted(self.counters.update)
            else:
                state.export_model(
                    self.policy,
                    self.parts.tokenizer,
                    self.rundir.model,
                    full_state,
                    self._export_info(),
                )
                self.rundir.mark_done(self.counters.frames)
            finish_tracking(self.tracker, self.cfg, self.rundir, preempted)
        self.ctx.barrier()

    def _export_info(self) -> state.ExportInfo:
        cfg = self.cfg
        return state.ExportInfo(
            action_space=cfg.env.action_space,
            action_texts=self.envs.action_texts,
            level=cfg.env.level,
            scoring=cfg.policy.scoring,
            history=cfg.env.history,
            value_hidden=cfg.model.value_hidden,
            frames=self.counters.frames,
        )


def train(cfg: Config, run_name: str | None = None) -> Path:
    """Train one run (this rank's part of it); returns the run directory."""
    return run_rank(cfg, lambda ctx, flag: Trainer(cfg, run_name, ctx).run(flag))
