"""The DRRN baseline's training run (upstream GLAM's ``experiments/agents/drrn``): every update,
each env acts ``ppo.steps_per_env`` times (upstream: 32 envs x 4 steps) with actions sampled from
softmax(Q), the transitions enter the replay memory, then ``drrn.grad_steps`` Q-learning steps
(upstream: 1) on batches of ``ppo.minibatch_size`` (upstream: 64) once the memory holds a batch.

The run machinery (run directory, checkpoints, MLflow, progress, signals) is `agents.loop`'s.
A checkpoint adds the replay memory (``replay.safetensors``) to the network, optimizer, env
states and counters; actions and replay batches come from keyed generators; so resuming is bit
for bit. The tokenizer is built once per run (``<run>/tokenizer.json``) and is deterministic.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glamhpc.agents.drrn.export import export_drrn
from glamhpc.agents.drrn.learn import act, replay_rng, td_step
from glamhpc.agents.drrn.network import DRRN, param_count
from glamhpc.agents.drrn.replay import ReplayMemory, Transition, as_tokens
from glamhpc.agents.drrn.tokenizer import (
    TOKENIZER_FILE,
    build_tokenizer,
    encode,
    env_corpus,
    load_tokenizer,
    save_tokenizer,
)
from glamhpc.agents.loop import OneRankRun, train_one_rank
from glamhpc.config import Config
from glamhpc.distributed import held_memory
from glamhpc.rl.rollout import EpisodeStats

REPLAY_FILE = "replay.safetensors"
#: Bytes per parameter the run holds after an update: fp32 weights, gradients, Adam's 2 moments.
_BYTES_PER_PARAM = 4 * 4


class DRRNRun(OneRankRun):
    """One DRRN run; see the module docstring."""

    def build(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        cfg = self.cfg
        path = self.rundir.path / TOKENIZER_FILE
        if path.is_file():
            self.tokenizer = load_tokenizer(path)
        else:
            self.tokenizer = build_tokenizer(env_corpus(cfg), cfg.drrn.vocab_size)
            save_tokenizer(self.tokenizer, path)
        # Seeded here, after the tokenizer: the weights depend on the seed and sizes only.
        torch.manual_seed(cfg.seed)
        self.drrn = DRRN(self.tokenizer.get_vocab_size(), cfg.drrn.hidden).to(self.ctx.device)
        ppo = cfg.ppo
        optimizer = torch.optim.Adam(
            self.drrn.parameters(), lr=ppo.lr, betas=ppo.adam_betas, eps=ppo.adam_eps
        )
        self.memory = ReplayMemory(cfg.drrn.memory_size, cfg.drrn.priority_fraction)
        self.action_ids = encode(self.tokenizer, self.envs.action_texts)
        return self.drrn, optimizer

    def one_update(self) -> dict[str, float]:
        cfg, update = self.cfg, self.counters.update
        start = time.perf_counter()
        episodes = EpisodeStats()
        entropies: list[float] = []
        states = encode(self.tokenizer, self.envs.prompts())
        for t in range(cfg.ppo.steps_per_env):
            actions, logp = act(self.drrn, states, self.action_ids, cfg.seed, update, t)
            entropies.append(float(-(logp.exp() * logp).sum(-1).mean()))
            result = self.envs.step(actions.tolist())
            for info in result.episodes:
                episodes.add(info)
            # After a done, the env already shows its next episode: the target masks it.
            nexts = encode(self.tokenizer, self.envs.prompts())
            for i, (s, a, n) in enumerate(zip(states, actions.tolist(), nexts, strict=True)):
                reward, done = float(result.rewards[i]), bool(result.dones[i])
                self.memory.push(Transition(as_tokens(s), a, reward, as_tokens(n), done))
            states = nexts
        rollout_s = time.perf_counter() - start
        steps = []
        for g in range(cfg.drrn.grad_steps):
            if len(self.memory) < cfg.ppo.minibatch_size:
                break  # upstream: no update until the memory holds one batch
            batch = self.memory.sample(cfg.ppo.minibatch_size, replay_rng(cfg.seed, update, g))
            ppo = cfg.ppo
            step = td_step(
                self.drrn, self.optimizer, batch, self.action_ids, ppo.gamma, ppo.max_grad_norm
            )
            steps.append(step)
        learned = {k: float(np.mean([s[k] for s in steps])) for k in steps[0]} if steps else {}
        held = held_memory(self.drrn, self.optimizer, (), self.ctx.device)
        return {
            **episodes.metrics(),
            **learned,
            "entropy": float(np.mean(entropies)),
            "grad_steps": float(len(steps)),
            "replay_size": float(len(self.memory)),
            "time/rollout_s": rollout_s,
            "time/update_s": time.perf_counter() - start - rollout_s,
            **held.metrics(),
        }

    # ------------------------------------------------------------------ checkpoint and export
    def write_extra(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file(self.memory.state_tensors(), str(folder / REPLAY_FILE))

    def read_extra(self, folder: Path) -> None:
        from safetensors.torch import load_file

        self.memory.load_tensors(load_file(str(folder / REPLAY_FILE)))

    def extra_state(self) -> dict[str, Any]:
        vocab = self.tokenizer.get_vocab_size()
        return {
            "agent": "drrn",
            # What `glamhpc train --smoke` checks: the encoders and the Q head (its second group
            # of parameters) each learn, and the bytes the architecture implies are held.
            "smoke": {
                "second": ["hidden.", "act_scorer."],
                "planned_static_bytes": param_count(vocab, self.cfg.drrn.hidden) * _BYTES_PER_PARAM,
            },
        }

    def export(self, folder: Path) -> None:
        meta = {**self.export_meta(), "history": self.cfg.env.history}
        export_drrn(self.drrn, self.tokenizer, folder, meta)


def train_drrn(cfg: Config, run_name: str | None = None) -> Path:
    """Train one DRRN run; returns the run directory."""
    return train_one_rank(DRRNRun, cfg, run_name)
