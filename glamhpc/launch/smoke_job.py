"""`glamhpc submit CONFIG --smoke`: the smoke check as a short one-node job on the target cluster.

Before spending GPU hours, a user checks that the cluster setup runs the config: the partition,
GPUs, container, caches and Python stack of a compute node, with `glamhpc train CONFIG --smoke`
(2 updates of a shrunk stand-in, then a bit-exact resume; `glamhpc.launch.smoke`) run there.
The job asks for the config's resources on one node (at most 2 GPUs: the smoke uses 2 ranks
where the config distributes) and at most 20 minutes, writes its verdict into its log and
returns the exit code and the RESULT line.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from glamhpc.config import Config
from glamhpc.launch import registry
from glamhpc.launch.executors import make_executor, sbatch_errors
from glamhpc.launch.job_result import recorded
from glamhpc.launch.resources import Resources, job_name, resolve
from glamhpc.rundir import RunDir

#: A smoke job never needs long: 2 updates of a tiny model plus start-up.
SMOKE_TIME_MIN = 20
SMOKE_KIND = "smoke"


@dataclass(frozen=True)
class SmokeSpec:
    config_path: str
    """The resolved config snapshot the job checks."""
    workdir: str


@dataclass(frozen=True)
class SmokeOutcome:
    returncode: int
    result: str
    """The RESULT line (or the last line of output when the check could not run)."""


class SmokeJob:
    """What submitit runs on the node: `glamhpc train SNAPSHOT --smoke`, in the image if set."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def argv(self, spec: SmokeSpec) -> list[str]:
        return self.command(spec)[0]

    def command(self, spec: SmokeSpec) -> tuple[list[str], dict[str, str]]:
        """The node's command and its environment (container variables travel by name)."""
        res = self.resources
        python = "python3" if res.container else sys.executable
        argv = [python, "-m", "glamhpc", "train", spec.config_path, "--smoke"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if not res.container:
            return argv, env
        from glamhpc.containers import job_command, resolve_image_id

        wrapped = job_command(
            argv,
            res.container,
            environ=env,
            binds=[spec.workdir, str(Path(spec.config_path).parent)],
            gpus=res.gpus_per_node > 0,
            workdir=spec.workdir,
            image_id=resolve_image_id(res.container, env),
        )
        return wrapped.argv, wrapped.env

    def __call__(self, spec: SmokeSpec) -> SmokeOutcome:
        # A JSON result for `glamhpc jobs`, which never unpickles submitit's result file.
        with recorded():
            return self._check(spec)

    def _check(self, spec: SmokeSpec) -> SmokeOutcome:
        argv, env = self.command(spec)
        proc = subprocess.run(
            argv,
            cwd=spec.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        print(proc.stdout, flush=True)  # the job's log holds the verdict table
        lines = proc.stdout.strip().splitlines()
        return SmokeOutcome(proc.returncode, lines[-1] if lines else "")


def smoke_resources(cfg: Config) -> Resources:
    res = resolve(cfg)
    return dataclasses.replace(
        res,
        nodes=1,
        gpus_per_node=min(res.gpus_per_node, 2),
        nproc_per_node=1,
        time_min=min(res.time_min or SMOKE_TIME_MIN, SMOKE_TIME_MIN),
        max_requeues=0,
    )


@dataclass
class SubmittedSmoke:
    job_id: str
    folder: Path
    job: Any

    def outcome(self) -> SmokeOutcome:
        # Risk, accepted: submitit unpickles the job's result file from <run dir>/launch. Only
        # this process's own job, in a run directory it just created (docs/CONTRACTS.md, Trust).
        result: SmokeOutcome = self.job.result()
        return result


def submit_smoke(cfg: Config, workdir: Path | None = None) -> SubmittedSmoke:
    """Snapshot the config under ``<run_root>/<experiment>/smoke-<stamp>/launch`` and submit."""
    cwd = (workdir or Path.cwd()).resolve()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"smoke-{stamp}"
    run = RunDir.of(cfg, name, cwd)
    snapshot = run.write_launch_snapshot(cfg)
    res = smoke_resources(cfg)
    executor = make_executor(res, run.launch, job_name(SMOKE_KIND, name))
    with sbatch_errors():
        job = executor.submit(SmokeJob(res), SmokeSpec(str(snapshot), str(cwd)))
    registry.append(
        registry.JobRecord(
            job_id=str(job.job_id),
            kind=SMOKE_KIND,
            name=name,
            executor=res.executor,
            folder=str(run.launch),
            runs=[name],
            run_dirs=[str(run.path)],
            experiment=cfg.experiment,
            workdir=str(cwd),
        )
    )
    return SubmittedSmoke(str(job.job_id), run.launch, job)
