"""Evaluation parts as one Slurm array job, recorded so `glamhpc jobs|logs|cancel` see it.

`glamhpc eval --executor slurm` hands its parts here. The array's resources come from the eval
command's own options (no training config is involved: an evaluation has no envs to split over
ranks, no torchrun and no checkpoints); the launch defaults that do apply (the USR2 warning
before the time limit, the requeue budget) are `LaunchConfig`'s, so an eval array and a run
submitted with the same options ask Slurm for the same things. The submission is appended to
the job registry as kind ``eval``, with one entry per array task in ``runs``.

Generic over the task function: this module knows nothing about evaluation beyond naming, so
`glamhpc.launch` stays free of torch and minigrid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import submitit

from glamhpc.config import ConfigError, LaunchConfig
from glamhpc.launch import registry
from glamhpc.launch.executors import make_executor, sbatch_errors
from glamhpc.launch.resources import Resources, job_name, time_to_minutes

__all__ = [
    "EVAL_KIND",
    "EvalArray",
    "EvalArrayOptions",
    "eval_resources",
    "part_names",
    "submit_eval_array",
]

#: Registry kind and Slurm job-name kind (``glamhpc-eval:<agent>``) of evaluation arrays.
EVAL_KIND = "eval"

TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class EvalArrayOptions:
    """Resources of each array task (one process, one node) and the folder of its files.

    Attributes:
        folder: submitit's folder: the pickled tasks and results, one log per array task.
        time: Slurm time syntax; None leaves the partition's default limit.
    """

    folder: Path
    partition: str | None = None
    time: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None
    account: str | None = None


def eval_resources(options: EvalArrayOptions) -> Resources:
    """The Slurm resources of one array task.

    Raises:
        ConfigError: a malformed time limit, or one not longer than the USR2 warning.
    """
    defaults = LaunchConfig()
    time_min = time_to_minutes(options.time)
    if time_min is not None and defaults.signal_delay_s >= time_min * 60:
        raise ConfigError(
            f"--time {options.time} is not longer than the {defaults.signal_delay_s} s warning "
            "Slurm sends before the limit; give the array tasks more time"
        )
    # A GPU task gets one core per GPU unless told otherwise, as a training rank does.
    cores = options.cpus_per_task or max(1, options.gpus_per_node)
    return Resources(
        executor="slurm",
        nodes=1,
        nproc_per_node=1,
        gpus_per_node=options.gpus_per_node,
        cpus_per_task=cores,
        time_min=time_min,
        mem=options.mem,
        partition=options.partition,
        account=options.account,
        signal_delay_s=defaults.signal_delay_s,
        max_requeues=defaults.max_requeues,
    )


def part_names(label: str, count: int) -> list[str]:
    """What `glamhpc jobs` shows in its run column for each array task (``random/part0``)."""
    return [f"{label}/part{index}" for index in range(count)]


@dataclass
class EvalArray(Generic[ResultT]):
    """A submitted evaluation array: its Slurm job id and one submitit job per task."""

    job_id: str
    jobs: list[submitit.Job[ResultT]]
    record: registry.JobRecord


def submit_eval_array(
    fn: Callable[[TaskT], ResultT],
    tasks: Sequence[TaskT],
    label: str,
    options: EvalArrayOptions,
) -> EvalArray[ResultT]:
    """Submit ``fn(task)`` for every task as one array job named ``glamhpc-eval:<label>`` and
    record it in the job registry.

    submitit pickles ``fn`` and each task into ``options.folder``; ``job.result()`` of each
    returned job waits for that task and unpickles its return value.

    Raises:
        ConfigError: bad resources (see `eval_resources`).
        LaunchError: no Slurm here, or Slurm rejected the job (Slurm's reason, one line).
    """
    if not tasks:
        raise ValueError("an evaluation array needs at least one task")
    resources = eval_resources(options)
    executor = make_executor(
        resources, options.folder, job_name(EVAL_KIND, label), array_parallelism=len(tasks)
    )
    with sbatch_errors():
        jobs = executor.map_array(fn, list(tasks))
    job_id = str(jobs[0].job_id).split("_")[0]
    record = registry.JobRecord(
        job_id=job_id,
        kind=EVAL_KIND,
        name=label,
        executor=resources.executor,
        folder=str(options.folder.resolve()),
        runs=part_names(label, len(tasks)),
        workdir=str(Path.cwd()),
    )
    registry.append(record)
    return EvalArray(job_id, jobs, record)
