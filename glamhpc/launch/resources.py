"""Resolved job resources: the config's ``launch`` section + CLI options -> submitit parameters.

Everything here is pure (no Slurm, no files), so the mapping from what a user writes to what
sbatch receives is tested exhaustively without a cluster.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glamhpc.config import (
    Config,
    ConfigError,
    LaunchConfig,
    env_split_problem,
    training_precision_problem,
)
from glamhpc.inputs.names import check_batch_text, sbatch_key_problem

#: Prefix of every Slurm job name glamhpc submits: `glamhpc jobs` and `cancel` select by it, so
#: a user's other jobs are never listed or touched.
JOB_NAME_PREFIX = "glamhpc"

#: submitit needs a number of minutes even when the user sets no limit: its local controller
#: kills jobs at that age, and its signal handler computes "timed out" from it. With no limit
#: this stand-in means "not known here" (Slurm gets no --time; the partition default applies).
UNKNOWN_TIME_MIN = 60 * 24 * 365

_TIME_PATTERNS = (
    # Slurm's --time formats (sbatch(1)): M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
    (re.compile(r"^(\d+)$"), ("m",)),
    (re.compile(r"^(\d+):(\d+)$"), ("m", "s")),
    (re.compile(r"^(\d+):(\d+):(\d+)$"), ("h", "m", "s")),
    (re.compile(r"^(\d+)-(\d+)$"), ("d", "h")),
    (re.compile(r"^(\d+)-(\d+):(\d+)$"), ("d", "h", "m")),
    (re.compile(r"^(\d+)-(\d+):(\d+):(\d+)$"), ("d", "h", "m", "s")),
)
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def time_to_minutes(value: str | int | None) -> int | None:
    """Slurm time syntax -> whole minutes (rounded up, at least 1); None/UNLIMITED -> None.

    >>> time_to_minutes("1-02:00:00"), time_to_minutes("90"), time_to_minutes("00:30:30")
    (1560, 90, 31)
    """
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() in ("", "unlimited", "infinite"):
        return None
    for pattern, units in _TIME_PATTERNS:
        match = pattern.match(text)
        if match:
            seconds = sum(int(g) * _SECONDS[u] for g, u in zip(match.groups(), units, strict=True))
            if seconds <= 0:
                raise ConfigError(f"bad time limit '{text}': must be longer than zero")
            return max(1, math.ceil(seconds / 60))
    raise ConfigError(
        f"bad time limit '{text}': use Slurm's syntax, e.g. 30 (minutes), 04:00:00, 1-12:00:00"
    )


#: CLI option name -> LaunchConfig field, for the resource options of `submit` and `sweep`.
CLI_FIELDS = (
    "executor",
    "nodes",
    "gpus_per_node",
    "nproc_per_node",
    "cpus_per_task",
    "mem",
    "time",
    "partition",
    "account",
    "qos",
    "constraint",
    "container",
)


def apply_cli_options(cfg: Config, **options: Any) -> Config:
    """Return a copy of ``cfg`` whose launch section takes every option that is not None.

    Options are set as typed values, not parsed as YAML overrides: ``--time 04:00:00`` would
    otherwise become the sexagesimal integer 14400.
    """
    unknown = set(options) - set(CLI_FIELDS)
    if unknown:
        raise ValueError(f"not launch options: {sorted(unknown)}")
    updates = {k: v for k, v in options.items() if v is not None}
    if not updates:
        return cfg
    data = cfg.launch.model_dump()
    data.update(updates)
    from glamhpc.config import config_from_dict, to_dict

    merged = to_dict(cfg)
    merged["launch"] = data
    return config_from_dict(merged)


@dataclass(frozen=True)
class Resources:
    """What one job asks for; ``nproc_per_node`` ranks run under torchrun on each node."""

    executor: str
    nodes: int
    nproc_per_node: int
    gpus_per_node: int
    cpus_per_task: int
    time_min: int | None
    mem: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    container: str | None = None
    signal_delay_s: int = 120
    max_requeues: int = 3
    max_restarts: int = 0
    setup: tuple[str, ...] = ()
    extra_sbatch: dict[str, str] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc_per_node

    @property
    def shutdown_timeout_s(self) -> int:
        """How long a torchrun agent lets its ranks save after a signal before killing them.

        Slurm kills the job ``signal_delay_s`` after its USR2; keep a margin for the requeue.
        """
        return max(10, self.signal_delay_s - 15)


def resolve(cfg: Config) -> Resources:
    """The launch section -> validated resources (a bad combination fails here, before submit)."""
    launch: LaunchConfig = cfg.launch
    if launch.executor == "local" and launch.nodes > 1:
        raise ConfigError(
            f"launch.nodes={launch.nodes} needs Slurm: the local executor runs one node; use "
            "--executor slurm (try it on this machine with `glamhpc cluster up --nodes 2`)"
        )
    nproc = launch.gpus_per_node if launch.gpus_per_node > 0 else launch.nproc_per_node
    if launch.gpus_per_node > 0 and cfg.model.device == "cpu":
        raise ConfigError(
            f"launch.gpus_per_node={launch.gpus_per_node} but model.device=cpu: set "
            "model.device=auto (or cuda), or gpus_per_node=0 for CPU ranks"
        )
    precision = training_precision_problem(cfg)
    if precision:
        raise ConfigError(precision)
    split = env_split_problem(cfg.env.num_envs, launch.nodes * nproc)
    if split:
        raise ConfigError(
            f"the envs cannot split evenly over {launch.nodes} node(s) x {nproc} rank(s): {split}"
        )
    signal_delay = launch.signal_delay_s
    time_min = time_to_minutes(launch.time)
    if time_min is not None and signal_delay >= time_min * 60:
        raise ConfigError(
            f"launch.signal_delay_s={signal_delay} is not shorter than the time limit "
            f"({launch.time}); the job would be signalled before it starts: lower it"
        )
    return Resources(
        executor=launch.executor,
        nodes=launch.nodes,
        nproc_per_node=nproc,
        gpus_per_node=launch.gpus_per_node,
        # One core per rank unless told otherwise: ranks pinned to a single core would crawl.
        cpus_per_task=launch.cpus_per_task or nproc,
        time_min=time_min,
        mem=launch.mem,
        partition=launch.partition,
        account=launch.account,
        qos=launch.qos,
        constraint=launch.constraint,
        container=launch.container,
        signal_delay_s=signal_delay,
        max_requeues=launch.max_requeues,
        max_restarts=cfg.dist.max_restarts,
        setup=tuple(launch.setup),
        extra_sbatch=dict(launch.extra_sbatch),
    )


def slurm_parameters(res: Resources, job_name: str) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (sbatch options) for ``res``: one task per node."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "nodes": res.nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": res.cpus_per_task,
        # None: submitit writes no --time line and the partition's default limit applies.
        "time": res.time_min,
        "signal_delay_s": res.signal_delay_s,
        # One log per node task with stdout and stderr interleaved in order: what a user reads.
        "stderr_to_stdout": True,
    }
    optional = {
        "gpus_per_node": res.gpus_per_node or None,
        "mem": res.mem,
        "partition": res.partition,
        "account": res.account,
        "qos": res.qos,
        "constraint": res.constraint,
        "setup": list(res.setup) or None,
        "additional_parameters": dict(res.extra_sbatch) or None,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    check_batch_strings(params)
    return params


def check_batch_strings(params: dict[str, Any]) -> None:
    """Last guard before submitit writes ``#SBATCH`` lines from ``params``: no control character
    in any value or option name (the schema refuses them first; this covers every other way
    a string gets here). ``setup`` is exempt: its lines are shell by design."""
    for key, value in params.items():
        if key == "setup":
            continue
        if isinstance(value, dict):
            for option, text in value.items():
                problem = sbatch_key_problem(str(option))
                if problem:
                    raise ConfigError(problem)
                check_batch_text(str(text), f"sbatch option {option}")
        elif isinstance(value, (str, Path)):
            check_batch_text(str(value), f"sbatch {key.replace('_', '-')}")


def local_parameters(res: Resources) -> dict[str, Any]:
    """submitit LocalExecutor parameters: the local controller kills a job at ``timeout_min``
    (default 2 minutes!), so an unset limit must become a long one."""
    params: dict[str, Any] = {
        "timeout_min": res.time_min if res.time_min is not None else UNKNOWN_TIME_MIN,
        "signal_delay_s": res.signal_delay_s,
        "tasks_per_node": 1,
        "stderr_to_stdout": True,
    }
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.setup:
        params["setup"] = list(res.setup)
    return params


def job_name(kind: str, name: str) -> str:
    """``glamhpc:<run>``, ``glamhpc-sweep:<sweep>``, ...: recognisable in squeue and sacct.
    ``name`` is checked here too: it lands on an ``#SBATCH --job-name`` line."""
    check_batch_text(name, "job name")
    prefix = JOB_NAME_PREFIX if kind == "run" else f"{JOB_NAME_PREFIX}-{kind}"
    return f"{prefix}:{name}"


def parse_job_name(name: str) -> tuple[str, str] | None:
    """Inverse of :func:`job_name`: (kind, name), or None for a job glamhpc did not submit."""
    head, sep, rest = name.partition(":")
    if not sep:
        return None
    if head == JOB_NAME_PREFIX:
        return "run", rest
    if head.startswith(JOB_NAME_PREFIX + "-"):
        return head[len(JOB_NAME_PREFIX) + 1 :], rest
    return None
