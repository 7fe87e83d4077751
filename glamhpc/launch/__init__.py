"""Launching runs: submitit executors (local processes or Slurm), per-node torchrun, sweeps as
job arrays, and the job listing/logs/cancel behind `glamhpc jobs|logs|cancel`.

Public API::

    from glamhpc.launch import plan_run, submit_run, load_sweep, plan_sweep, submit_sweep
    plan = plan_run(cfg, run_name)          # the launch plan: resources, paths, ranks (no writes)
    print(format_plan(plan, memory=True))   # --dry-run: plan, per-rank memory, sbatch script
    submitted = submit_run(plan)            # -> job id, submitit Job
    sweep = submit_sweep(plan_sweep(load_sweep("configs/sweeps/x.yaml")))

Modules: ``plan`` (the launch plan, rank layout and memory estimate), ``submit`` (one run),
``sweep_file`` (sweep files), ``sweep`` (planning and submitting a sweep), ``sweep_driver`` (what
a sweep runs in its own jobs), ``resources`` and ``executors`` (submitit parameters), ``torchrun``
(what every node runs). The requeue contract with the trainer is in docs/CONTRACTS.md ("launch").
"""

from glamhpc.launch.executors import LaunchError
from glamhpc.launch.plan import (
    Capacity,
    MemoryEstimate,
    RankSlot,
    RunPlan,
    check_capacity,
    format_plan,
    plan_run,
)
from glamhpc.launch.resources import Resources, apply_cli_options, resolve, time_to_minutes
from glamhpc.launch.submit import Submitted, submit_run
from glamhpc.launch.sweep import (
    SubmittedSweep,
    SweepPlan,
    format_sweep_plan,
    plan_sweep,
    submit_sweep,
)
from glamhpc.launch.sweep_file import Element, SweepSpec, expand, load_sweep
from glamhpc.launch.torchrun import JobOutcome, RunSpec, TorchrunJob, torchrun_argv

__all__ = [
    "Capacity",
    "Element",
    "JobOutcome",
    "LaunchError",
    "MemoryEstimate",
    "RankSlot",
    "Resources",
    "RunPlan",
    "RunSpec",
    "Submitted",
    "SubmittedSweep",
    "SweepPlan",
    "SweepSpec",
    "TorchrunJob",
    "apply_cli_options",
    "check_capacity",
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
