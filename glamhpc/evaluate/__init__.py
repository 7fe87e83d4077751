"""Evaluation on the GLAM paper's generalization suites (`glamhpc eval`).

- `episodes`: the episode player (fixed quotas per env stream, the shared action sampler);
- `agents`: what is evaluated (checkpoint, zero-shot model, random agent, BabyAI bot);
- `runner`: suite items x episodes on deterministic test seeds, split into shards and merged;
- `shards`: the pure split / merge of episodes over ranks or array tasks;
- `stats`: Wilson intervals, per-item rows, CSV / markdown, metric names;
- `report`: the printed table, the files and the MLflow logging (`glamhpc.tracking.evals`).

Slurm arrays of shards are submitted by `glamhpc.launch.eval_array`.
"""

from glamhpc.evaluate.agents import AgentSpec, EvalError, baseline_spec, checkpoint_spec, model_spec
from glamhpc.evaluate.runner import EvalPlan, EvalResult, evaluate, resolve_items
from glamhpc.evaluate.shards import merge_shards, shard_episodes, shard_streams
from glamhpc.evaluate.stats import summarize, wilson_interval

__all__ = [
    "AgentSpec",
    "EvalError",
    "EvalPlan",
    "EvalResult",
    "baseline_spec",
    "checkpoint_spec",
    "evaluate",
    "merge_shards",
    "model_spec",
    "resolve_items",
    "shard_episodes",
    "shard_streams",
    "summarize",
    "wilson_interval",
]
