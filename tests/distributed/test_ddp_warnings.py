"""The DDP wrapper warns about nothing: torch 2.13 deprecated ``broadcast_buffers`` with a
FutureWarning that every rank of every job printed (issue 14). Built in a fresh interpreter on a
real one-rank gloo group on 127.0.0.1, with FutureWarnings turned into errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CODE = """
import warnings
warnings.simplefilter("error", FutureWarning)
import torch
from torch import nn
from glamhpc.config import DistConfig
from glamhpc.distributed import init_distributed, shutdown
from glamhpc.distributed.parallel import wrap_policy

class Policy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.register_buffer("candidate_ids", torch.arange(3), persistent=False)

    def forward(self, x):
        return self.linear(x)

ctx = init_distributed(DistConfig(strategy="ddp"), "cpu", group_of_one=True)
try:
    ddp = wrap_policy(Policy(), ctx, DistConfig(strategy="ddp"))
    ddp(torch.ones(2, 4)).sum().backward()
    # Behaviour kept: no buffer broadcast before each forward.
    print(getattr(ddp, "forward_sync_buffers", getattr(ddp, "broadcast_buffers", None)))
finally:
    shutdown()
"""


def test_ddp_wrapping_raises_no_future_warning() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "FutureWarning" not in out.stderr
