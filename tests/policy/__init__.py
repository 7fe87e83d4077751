"""Tests of glamhpc.policy; shared helpers (session-cached tiny-t5 build, small T5 models)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from glamhpc.policy.models import load_model
from glamhpc.policy.t5 import build_from_config, t5_config_for
from glamhpc.policy.tiny import build_tiny_t5
from glamhpc.policy.tiny_corpus import ACTION_SPACES, sample_prompts

STANDARD_ACTIONS: list[str] = list(ACTION_SPACES["standard"])

# A prompt exactly as the env layer writes it (BABYAI_TEXT_SPEC.md section 6).
REAL_PROMPTS: list[str] = [
    "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle \n "
    "Goal of the agent: go to the red ball \n Observation 0: You see a wall 3 steps right, "
    "You see a yellow ball 3 steps left and 2 steps forward, You see a blue ball 3 steps left, "
    "\n Action 0: ",
    "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle \n "
    "Goal of the agent: pick up the blue key \n Observation 0: You carry a yellow ball, "
    "You see a wall 1 step right, You see a green ball 2 steps left and 2 steps forward, "
    "\n Action 0: turn left \n Observation 1: You see a green key 4 steps forward, "
    "\n Action 1: ",
    "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle \n "
    "Goal of the agent: open the door \n Observation 0: "
    "You see a locked yellow door 1 step right and 4 steps forward, \n Action 0: ",
    "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle \n "
    "Goal of the agent: put the red box next to the grey key \n Observation 0: \n Action 0: ",
]


@functools.cache
def tiny_dir() -> Path:
    """tiny-t5 built once per test session in a private cache folder."""
    root = Path(tempfile.mkdtemp(prefix="glamhpc-test-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    return build_tiny_t5(root)


def load_tiny(dtype: str = "fp32") -> tuple[Any, Any]:
    """A fresh tiny-t5 (model, tokenizer) from the session build."""
    return load_model("tiny-t5", cache_dir=tiny_dir().parent, dtype=dtype)


def small_t5(num_layers: int = 2, seed: int = 0) -> Any:
    """Random-init FLAN-T5-small-shaped model (every layer has the real shape; fewer layers)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = t5_config_for("google/flan-t5-small", num_layers=num_layers)
        return build_from_config(config).eval()


def prompts(n: int, seed: int = 0) -> list[str]:
    return sample_prompts(n, seed=seed)
