"""Launching runs: submitit executors (local processes or Slurm), per-node torchrun, sweeps as
job arrays, and the job listing/logs/cancel behind `glamhpc jobs|logs|cancel`.

Public API::

    from glamhpc.launch import plan_run, submit_run, load_sweep, plan_sweep, submit_sweep
    plan = plan_run(cfg, run_name)          # resolve resources and paths; writes nothing
    print(format_plan(plan))                # --dry-run: the plan and the sbatch script
    submitted = submit_run(plan)            # -> job id, submitit Job
    sweep = submit_sweep(plan_sweep(load_sweep("configs/sweeps/x.yaml")))

The requeue contract with the trainer is in docs/CONTRACTS.md ("launch").
"""

from glamhpc.launch.executors import LaunchError
from glamhpc.launch.resources import Resources, apply_cli_options, resolve, time_to_minutes
from glamhpc.launch.submit import RunPlan, Submitted, format_plan, plan_run, submit_run
from glamhpc.launch.sweep import (
    SweepPlan,
    SweepSpec,
    expand,
    format_sweep_plan,
    load_sweep,
    plan_sweep,
    submit_sweep,
)
from glamhpc.launch.torchrun import JobOutcome, RunSpec, TorchrunJob, torchrun_argv

__all__ = [
    "JobOutcome",
    "LaunchError",
    "Resources",
    "RunPlan",
    "RunSpec",
    "Submitted",
    "SweepPlan",
    "SweepSpec",
    "TorchrunJob",
    "apply_cli_options",
    "expand",
    "format_plan",
    "format_sweep_plan",
    "load_sweep",
    "plan_run",
    "plan_sweep",
    "resolve",
    "submit_run",
    "submit_sweep",
    "time_to_minutes",
    "torchrun_argv",
]
