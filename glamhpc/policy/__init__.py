"""The GLAM policy: seq2seq LLMs scoring candidate actions, with a value head.

- `models`: load FLAN-T5 / any seq2seq model offline-first, or build the tiny-t5 default.
- `scoring`: candidate log-probs (encoder once, decoder shared across candidates).
- `glam`: `GlamPolicy` (actor-critic `nn.Module`: `forward`, `act`, `evaluate`).

Knows nothing of the environments (no minigrid/gymnasium import).
"""

from glamhpc.policy.glam import GlamPolicy, action_stats
from glamhpc.policy.models import (
    TINY_T5,
    ModelNotAvailableError,
    build_tiny_t5,
    count_params,
    load_model,
    pick_device,
    t5_config_for,
)
from glamhpc.policy.scoring import policy_logits, score_prompts

__all__ = [
    "TINY_T5",
    "GlamPolicy",
    "ModelNotAvailableError",
    "action_stats",
    "build_tiny_t5",
    "count_params",
    "load_model",
    "pick_device",
    "policy_logits",
    "score_prompts",
    "t5_config_for",
]
