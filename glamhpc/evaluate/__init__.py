"""Evaluation on the GLAM paper's generalization suites (`glamhpc eval`).

- `episodes`: the episode player (fixed quotas per env stream, the shared action sampler);
- `agents`: what is evaluated (checkpoint, zero-shot model, random agent, BabyAI bot);
- `runner`: suite items x episodes on deterministic test seeds, split into parts and merged;
- `parts`: the pure split / merge of episodes over ranks or array tasks;
- `stats`: Wilson intervals, per-item rows, CSV / markdown, metric names;
- `report`: the printed table, the files and the MLflow logging (`glamhpc.tracking.evals`).

Slurm arrays of parts are submitted by `glamhpc.launch.eval_array`.
"""

from glamhpc.evaluate.agents import AgentSpec, EvalError, baseline_spec, checkpoint_spec, model_spec
from glamhpc.evaluate.parts import merge_parts, part_episodes, part_streams
from glamhpc.evaluate.runner import EvalResult, EvalWork, evaluate, resolve_items
from glamhpc.evaluate.stats import summarize, wilson_interval

__all__ = [
    "AgentSpec",
    "EvalError",
    "EvalResult",
    "EvalWork",
    "baseline_spec",
    "checkpoint_spec",
    "evaluate",
    "merge_parts",
    "model_spec",
    "part_episodes",
    "part_streams",
    "resolve_items",
    "summarize",
    "wilson_interval",
]
