"""Behaviour cloning (`agent: bc`): fine-tune the LLM on demonstrations, evaluate it as GLAM.

One update is one AdamW step on a global batch of (prompt, action text) pairs, split over the
ranks (DDP replicas); `schedule` decides the pairs and the learning rate from the step alone, so
resume is bitwise exact mid-epoch from (weights, optimizer, env states, counters). Every
``bc.eval_every`` updates (and at the last) a quick evaluation plays ``bc.eval_steps`` steps per
env on the run's training envs with the GLAM scoring policy (`rl.rollout.collect`, the keyed
sampler), logged as ``Main/success_rate`` like GLAM's. The frames axis counts demonstration
pairs trained on. The run directory, checkpoints, tracker, progress line and signal handling
are `agents.loop`'s (`AgentRun`), as for every baseline.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glamhpc.agents.bc import schedule
from glamhpc.agents.bc.cloner import Cloner, encode_pairs, label_tokens
from glamhpc.agents.bc.source import load_pairs
from glamhpc.agents.loop import AgentRun, train_ranks
from glamhpc.config import Config, ConfigError
from glamhpc.distributed import DistContext, full_state_dict, held_memory, unwrap, wrap_policy
from glamhpc.policy.models import count_params
from glamhpc.rl import state
from glamhpc.rl.build import build_model, build_policy
from glamhpc.rl.health import UpdateHealth, require_finite_weights
from glamhpc.rl.ppo import NonFiniteError
from glamhpc.rl.rollout import EpisodeStats, RolloutKey, collect

#: Gradient-norm clip (Hugging Face Trainer's default, which upstream's fine-tuning ran under).
MAX_GRAD_NORM = 1.0


class BCRun(AgentRun):
    """One rank of a behaviour-cloning run. Build with :func:`train`."""

    # An LLM's checkpoints are referenced by path in MLflow, not uploaded.
    upload_checkpoints = False

    def __init__(self, cfg: Config, run_name: str | None, ctx: DistContext) -> None:
        if cfg.dist.strategy != "ddp":
            raise ConfigError("agent=bc trains DDP replicas: set dist.strategy=ddp")
        if cfg.policy.head != "scoring":
            raise ConfigError("agent=bc clones the action text: set policy.head=scoring")
        super().__init__(cfg, run_name, ctx)
        model, self.tokenizer = build_model(cfg, ctx)
        self.num_params = count_params(model)
        # The GLAM policy over the same LLM: the quick evaluation scores candidates with it.
        self.scorer = build_policy(cfg, model, self.tokenizer, self.envs.action_texts, ctx.device)
        bf16 = torch.bfloat16 if cfg.model.precision == "bf16-mixed" else None
        self.cloner = wrap_policy(Cloner(model, bf16), ctx, cfg.dist, cfg.model.precision)
        self.params = [p for p in self.cloner.parameters() if p.requires_grad]
        self.health = UpdateHealth(unwrap(self.cloner).named_parameters())
        self.pairs: list[tuple[str, str]] = []
        self.total = 0
        self._full_state: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ the agent
    def build(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The demonstrations (rank 0 writes a bot dataset first) and the AdamW optimizer."""
        cfg = self.cfg
        self.pairs = load_pairs(cfg, self.rundir, self.ctx, self.envs)
        self.total = schedule.total_steps(
            len(self.pairs), cfg.bc.batch_size, cfg.bc.epochs, cfg.train.max_updates
        )
        optimizer = torch.optim.AdamW(self.params, lr=cfg.bc.lr, weight_decay=cfg.bc.weight_decay)
        return self.cloner, optimizer

    def more_to_do(self) -> bool:
        return self.counters.update < self.total

    def progress_plan(self) -> tuple[int, int] | None:
        return self.total, self.cfg.bc.batch_size

    def frames_in(self, metrics: dict[str, float]) -> int:
        return int(metrics["pairs"])  # the frames axis counts demonstration pairs

    def one_update(self) -> dict[str, float]:
        """One AdamW step, then every ``bc.eval_every`` updates (and at the last) the quick
        evaluation, keyed by the update it follows."""
        metrics = self._step()
        update = self.counters.update + 1
        if update % self.cfg.bc.eval_every == 0 or update == self.total:
            metrics.update(self._quick_eval(update))
        return metrics

    def extra_state(self) -> dict[str, Any]:
        """What `glamhpc train --smoke` checks: the encoder side and the decoder (its second
        parameter group) both learn, and the plan's static bytes (launch.plan.estimate_memory)
        for this model without a value head are what an update holds: fp32 weights, then per
        trainable parameter its gradient, AdamW's two moments and the update-health copy."""
        params = list(unwrap(self.cloner).parameters())
        weights = sum(p.numel() * p.element_size() for p in params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        return {
            "agent": "bc",
            "smoke": {
                "second": ["model.decoder."],
                "planned_static_bytes": weights + 16 * trainable,
            },
        }

    def gather_for_export(self) -> None:
        # Collective: a sharded model's full weights reach rank 0 before it exports.
        self._full_state = full_state_dict(self.cloner)

    def export(self, folder: Path) -> None:
        """The GLAM format: `glamhpc eval` scores candidates with the cloned LLM."""
        cfg = self.cfg
        info = state.ExportInfo(
            action_space=cfg.env.action_space,
            action_texts=list(self.envs.action_texts),
            level=cfg.env.level,
            scoring=cfg.policy.scoring,
            history=cfg.env.history,
            value_hidden=cfg.model.value_hidden,
            frames=self.counters.frames,
        )
        state.export_model(self.cloner, self.tokenizer, folder, self._full_state, info)

    # ------------------------------------------------------------------ one update
    def _step(self) -> dict[str, float]:
        """One AdamW step on this update's global batch; the batch's global statistics."""
        cfg, ctx, step = self.cfg, self.ctx, self.counters.update
        lr = schedule.lr_at(step, self.total, cfg.bc.warmup_steps, cfg.bc.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = schedule.step_batch(cfg.seed, step, len(self.pairs), cfg.bc.batch_size)
        mine = schedule.rank_share(batch, ctx.rank, ctx.world_size)
        weight = 1.0
        if len(mine) == 0:  # DDP needs every rank in every backward: one pair, zero weight
            mine, weight = batch[:1], 0.0
        prompts = [self.pairs[i][0] for i in mine]
        actions = [self.pairs[i][1] for i in mine]
        tokens = label_tokens(self.tokenizer, [self.pairs[i][1] for i in batch])
        self.health.snapshot()
        sums = self.cloner(*encode_pairs(self.tokenizer, prompts, actions, ctx.device))
        # DDP averages gradients over ranks: sum / global tokens x world is the global mean.
        loss = sums[0] * (weight * ctx.world_size / tokens)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM))
        reduced = ctx.all_reduce_sum(sums.detach().double().cpu() * weight)
        if not (math.isfinite(float(reduced[0])) and math.isfinite(norm)):
            raise NonFiniteError(
                f"non-finite loss or gradient norm at step {step + 1} (gradient norm "
                f"{norm:.4g}); the optimizer step was not applied: lower bc.lr"
            )
        self.optimizer.step()
        health = self.health.measure(ctx.all_reduce_sum)
        require_finite_weights(health)
        held = held_memory(self.cloner, self.optimizer, self.health.copies, ctx.device)
        count = max(float(reduced[3]), 1.0)
        return {
            "loss": float(reduced[0]) / count,
            "token_accuracy": float(reduced[1]) / count,
            "entropy": float(reduced[2]) / count,
            "grad_norm": norm,
            "lr": lr,
            "pairs": float(len(batch)),
            **health,
            **held.metrics(),
        }

    def _quick_eval(self, update: int) -> dict[str, float]:
        """Episodes finished in ``bc.eval_steps`` steps of every training env (sampled)."""

        def score(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                logprobs, values = self.scorer(prompts)
            return logprobs.float().cpu(), values.float().cpu()

        key = RolloutKey(self.cfg.seed, update, self.env_offset, self.cfg.env.num_envs)
        rollout = collect(
            score, self.envs, self.cfg.bc.eval_steps, self.num_envs_local, key, lambda: False
        )
        assert rollout is not None  # never asked to stop
        return EpisodeStats.merge(self.ctx.all_gather_objects(rollout.episodes)).metrics()


def train(cfg: Config, run_name: str | None = None) -> Path:
    """Train one behaviour-cloning run (this rank's part of it); returns the run directory."""
    return train_ranks(BCRun, cfg, run_name)


__all__ = ["BCRun", "train"]
