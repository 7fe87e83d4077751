"""What a sweep runs inside its own jobs: the finalizer that closes the MLflow parent run, and the
local executor's driver that plays the role of Slurm's array throttle.

Both are pickled by submitit and executed in a job process, never in the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import submitit

from glamhpc.launch import registry
from glamhpc.launch.executors import make_executor
from glamhpc.launch.job_result import recorded
from glamhpc.launch.resources import Resources, job_name
from glamhpc.launch.torchrun import JobOutcome, RunSpec, TorchrunJob
from glamhpc.rundir import RunDir

FINALIZE_DELIVERY_S = 300.0
"""Seconds the finalizer spends delivering children's journals before handing the parent over."""


def finalize_sweep(
    parent_run_id: str,
    uri: str | None,
    run_dirs: Sequence[str],
    sweep: str = "",
    delivery_s: float = FINALIZE_DELIVERY_S,
) -> str:
    """Close the parent run: FINISHED when every element wrote DONE, else FAILED, but only once
    every child's journal is delivered.

    Children whose jobs gave up waiting for an overloaded server are delivered here first
    (bounded by ``delivery_s``); when some are still undelivered the parent stays RUNNING (job
    state DELIVERING) and is handed over to the next `glamhpc runs` / `report` / `sweep`, which
    close it once the children are in (glamhpc.tracking.handover).
    """
    from glamhpc.tracking.handover import finalize_when_delivered, pending_records

    done = sum(RunDir(Path(d)).is_done() for d in run_dirs)
    status = "FINISHED" if done == len(run_dirs) else "FAILED"
    closed = finalize_when_delivered(parent_run_id, uri, run_dirs, status, delivery_s)
    _print_compare_url(parent_run_id, uri)
    summary = f"sweep {sweep}: {done}/{len(run_dirs)} runs finished"
    if closed:
        print(f"{summary}; parent run {status}", flush=True)
        return status
    left = [d for d in run_dirs if pending_records(Path(d))]
    print(
        f"{summary}; {len(left)} runs' journals not delivered after {delivery_s:g} s (server "
        f"overloaded or down?); parent stays RUNNING until the next `glamhpc runs`, `report` or "
        f"`sweep` delivers them",
        flush=True,
    )
    return "DELIVERING"


def _print_compare_url(parent_run_id: str, uri: str | None) -> None:
    """The children side by side in the MLflow UI: printed to the sweep's log and set as a tag
    on the parent. A link is a convenience: failing to make one never fails the sweep."""
    from glamhpc.report.loading import children_compare_url

    try:
        url = children_compare_url(parent_run_id, uri)
    except Exception as exc:
        print(f"no MLflow compare link for the children: {exc}", flush=True)
        return
    if url:
        print(f"compare in MLflow: {url}", flush=True)


class LocalSweepDriver:
    """The local executor's array: keep at most ``max_parallel`` element jobs running."""

    def __init__(self, resources: Resources, max_parallel: int) -> None:
        self.resources = resources
        self.max_parallel = max_parallel

    def __call__(
        self, folder: str, specs: list[RunSpec], parent: str | None, uri: str | None, name: str
    ) -> str:
        # A JSON result for `glamhpc jobs`, which never unpickles submitit's result file.
        with recorded():
            return self._drive(folder, specs, parent, uri, name)

    def _drive(
        self, folder: str, specs: list[RunSpec], parent: str | None, uri: str | None, name: str
    ) -> str:
        executor = make_executor(self.resources, Path(folder), job_name("sweep", name))
        pending = list(enumerate(specs))
        running: dict[int, submitit.Job[JobOutcome]] = {}
        try:
            while pending or running:
                while pending and len(running) < self.max_parallel:
                    index, spec = pending.pop(0)
                    job = executor.submit(TorchrunJob(self.resources), spec)
                    running[index] = job
                    registry.append(
                        registry.JobRecord(
                            job_id=str(job.job_id),
                            kind="element",
                            name=spec.run_name,
                            executor="local",
                            folder=folder,
                            runs=[spec.run_name],
                            run_dirs=[spec.run_dir],
                            parent_run_id=parent,
                            tracking_uri=uri,
                            workdir=spec.workdir,
                        )
                    )
                    print(f"element {index} ({spec.run_name}) started as {job.job_id}", flush=True)
                for index, job in list(running.items()):
                    if job.done():
                        running.pop(index)
                        print(f"element {index} ended: {job.state}", flush=True)
                time.sleep(1.0)
        except KeyboardInterrupt:
            # Cancelled: stop the elements too (they run in their own controller processes).
            for job in running.values():
                job.cancel(check=False)
            if parent:
                from glamhpc.tracking import finalize_parent

                finalize_parent(parent, "KILLED", uri)
            raise
        if parent:
            return finalize_sweep(parent, uri, [s.run_dir for s in specs], name)
        return "FINISHED"
