"""Every trainable agent behind one entry: `glamhpc train`, `submit`, `sweep` and `--smoke` call
:func:`train_agent`, which runs the training loop that ``cfg.agent`` names.

``glam`` is the paper's agent (PPO on an LLM scoring candidate actions, `glamhpc.rl.trainer`);
the others are the paper's baselines, each in its own subpackage with its own loop, checkpoint,
resume and tracking, sharing the run directory, the tracker and the evaluation protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from glamhpc.config import Config


#: Agents whose learner is one process (upstream too): a world of several ranks is refused.
ONE_RANK_AGENTS = frozenset({"drrn", "symbolic"})


def one_rank_problem(agent: str, world_size: int) -> str | None:
    """Why ``agent`` cannot train in a world of ``world_size`` ranks; None when it can.

    Torch-free: `glamhpc train --nproc N` asks it before torchrun starts any rank."""
    if world_size <= 1 or agent not in ONE_RANK_AGENTS:
        return None
    return (
        f"agent={agent} trains on one rank, not {world_size}: run it without --nproc "
        "(launch.nodes=1, launch.nproc_per_node=1, at most 1 GPU)"
    )


def train_agent(cfg: Config, run_name: str | None = None) -> Path:
    """Train one run of ``cfg.agent`` (this rank's part of it); returns the run directory."""
    # Imported lazily: each loop pulls in only its own dependencies.
    if cfg.agent == "symbolic":
        from glamhpc.agents.symbolic.trainer import train_symbolic

        return train_symbolic(cfg, run_name)
    if cfg.agent == "bc":
        from glamhpc.agents.bc.trainer import train as train_bc

        return train_bc(cfg, run_name)
    if cfg.agent == "drrn":
        from glamhpc.agents.drrn.trainer import train_drrn

        return train_drrn(cfg, run_name)
    from glamhpc.rl.trainer import train

    return train(cfg, run_name)
