"""The Symbolic-PPO training loop: GLAM's run machinery around BabyAI's recurrent PPO learner.

The run directory, checkpoints (model + optimizer + env states + counters + history, atomic,
keep-N), the MLflow run, the progress line, the stop signals and the ``--smoke`` figures are
`agents.loop`'s (`OneRankRun`); the keyed action sampler and the keyed minibatch schedule are
GLAM's. Resume is bit for bit: the LSTM memory of every env is a buffer of the checkpointed
module, batch-norm statistics are buffers too, and nothing else draws randomness.

One rank only (upstream: one learner fed by 64 env processes): a torchrun world of several
ranks is refused with one line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glamhpc.agents import one_rank_problem
from glamhpc.agents.loop import OneRankRun, train_one_rank
from glamhpc.agents.symbolic.model import Arch, SymbolicACModel
from glamhpc.agents.symbolic.play import export as export_symbolic
from glamhpc.agents.symbolic.ppo import chunk_problem, recurrent_update
from glamhpc.agents.symbolic.rollout import Learner, collect
from glamhpc.agents.symbolic.vocab import VOCAB_FILE, build_vocab, load_vocab, save_vocab
from glamhpc.config import Config, ConfigError
from glamhpc.distributed import DistContext, held_memory
from glamhpc.envs.batch import episode_seed
from glamhpc.envs.textenv import make_level

#: Missions read from the level (first episode of this many env seeds) to build the vocabulary.
VOCAB_MISSIONS = 256
#: The critic's parameters: the second group `glamhpc train --smoke` checks.
CRITIC = "net.critic."
#: Bytes an fp32 Adam learner holds per trainable element: weights, gradients, two moments.
_BYTES_PER_PARAM = 4 * 4


def setup_problem(cfg: Config, world_size: int) -> str | None:
    """Why ``cfg`` cannot train Symbolic-PPO on ``world_size`` ranks; None when it can."""
    return one_rank_problem(cfg.agent, world_size) or chunk_problem(
        cfg.ppo.steps_per_env, cfg.ppo.minibatch_size, cfg.symbolic.recurrence
    )


def level_missions(cfg: Config, count: int = VOCAB_MISSIONS) -> list[str]:
    """The missions of the first episode of ``count`` env seeds of the run's level."""
    env = make_level(cfg.env.level)
    try:
        missions = []
        for g in range(count):
            obs, _ = env.reset(seed=episode_seed(cfg.seed, g, 0))
            missions.append(str(obs["mission"]))
        return missions
    finally:
        env.close()


class SymbolicRun(OneRankRun):
    """One Symbolic-PPO run; see the module docstring."""

    def __init__(self, cfg: Config, run_name: str | None, ctx: DistContext | None = None) -> None:
        problem = setup_problem(cfg, int(os.environ.get("WORLD_SIZE", "1")))
        if problem:
            raise ConfigError(problem)
        super().__init__(cfg, run_name, ctx)
        self.vocab: list[str] = []

    def build(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Vocabulary (the run's saved one on resume), network, optimizer."""
        cfg, path = self.cfg, self.rundir.path / VOCAB_FILE
        if path.is_file():
            self.vocab = load_vocab(path)
        else:
            self.vocab = build_vocab(level_missions(cfg))
            save_vocab(path, self.vocab)
        sizes = cfg.symbolic
        arch = Arch(
            len(self.vocab), len(self.envs.action_texts), sizes.image_dim, sizes.memory_dim,
            sizes.instr_dim,
        )  # fmt: skip
        # Seeded here, after the vocabulary: the weights depend on the seed and sizes only.
        torch.manual_seed(cfg.seed)
        net = SymbolicACModel(arch)
        self.learner = Learner(net, cfg.env.num_envs).to(self.ctx.device)
        # Train mode throughout training, acting included (BabyAI: batch norm on batch stats).
        self.learner.train()
        ppo = cfg.ppo
        optimizer = torch.optim.Adam(
            self.learner.net.parameters(), lr=ppo.lr, betas=ppo.adam_betas, eps=ppo.adam_eps
        )
        return self.learner, optimizer

    def one_update(self) -> dict[str, float]:
        cfg, start = self.cfg, time.perf_counter()
        update = self.counters.update
        rollout = collect(
            self.learner, self.envs, self.vocab, cfg.ppo.steps_per_env, cfg.seed, update
        )
        rollout_s = time.perf_counter() - start
        stats = recurrent_update(
            self.learner.net, self.optimizer, rollout, cfg.ppo, cfg.symbolic.recurrence,
            seed=cfg.seed, update=update,
        )  # fmt: skip
        held = held_memory(self.learner.net, self.optimizer, (), self.ctx.device)
        return {
            **rollout.episodes.metrics(),
            "time/rollout_s": rollout_s,
            "time/update_s": time.perf_counter() - start - rollout_s,
            **stats,
            **held.metrics(),
        }

    def extra_state(self) -> dict[str, Any]:
        trainable = sum(p.numel() for p in self.learner.net.parameters() if p.requires_grad)
        # What `glamhpc train --smoke` checks: the actor-side network and the critic each learn,
        # and an fp32 Adam learner's bytes are what the last update held.
        smoke = {"second": [CRITIC], "planned_static_bytes": trainable * _BYTES_PER_PARAM}
        return {"agent": "symbolic", "smoke": smoke}

    def export(self, folder: Path) -> None:
        export_symbolic(self.learner.net, self.vocab, folder, self.export_meta())


def train_symbolic(cfg: Config, run_name: str | None = None) -> Path:
    """Train one Symbolic-PPO run; returns the run directory."""
    return train_one_rank(SymbolicRun, cfg, run_name)
