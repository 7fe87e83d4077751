"""The entry of one rank of a training run, shared by every agent's loop (GLAM's and the
baselines' in `glamhpc.agents`): stop signals first, then the process group, then the loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from glamhpc.distributed import DistContext, init_distributed, shutdown
from glamhpc.rl.signals import SignalFlag

if TYPE_CHECKING:
    from glamhpc.config import Config


def run_rank(cfg: Config, start: Callable[[DistContext, SignalFlag], Path]) -> Path:
    """Run ``start(ctx, flag)`` as this rank's part of a run; returns what it returns (the run
    directory). The group is left however the loop ends, so a failed rank does not hang."""
    flag = SignalFlag()
    # Installed before the model loads: a pre-timeout signal during start-up is not lost.
    with flag.installed():
        ctx = init_distributed(cfg.dist, cfg.model.device)
        try:
            return start(ctx, flag)
        finally:
            shutdown()
