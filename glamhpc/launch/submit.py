"""`glamhpc submit`: one training run as one job (local processes or a Slurm allocation).

Order of work, so that a failure leaves nothing behind: resolve and validate everything (config,
resources, executor) -> write the config snapshot -> submit -> record the job. If submission
fails, the folders this call created are removed again. No MLflow run is created here: rank 0
of the job creates it (or resumes it), so a rejected job cannot leave a run RUNNING.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from glamhpc.config import Config, ConfigError, to_yaml
from glamhpc.launch import registry
from glamhpc.launch.executors import (
    LaunchError,
    make_executor,
    render_sbatch,
    require_slurm,
    sbatch_errors,
    slurm_command,
)
from glamhpc.launch.resources import Resources, job_name, resolve
from glamhpc.launch.torchrun import DONE_MARKER, Rendezvous, RunSpec, TorchrunJob, torchrun_argv

#: Folder inside a run directory holding what the launcher writes (config snapshot, submitit
#: pickles, one log per node, torchrun's per-rank logs).
LAUNCH_FOLDER = "launch"


@dataclass
class RunPlan:
    """Everything decided before a run is submitted (printed by --dry-run)."""

    cfg: Config
    resources: Resources
    run_name: str
    run_dir: Path
    folder: Path
    spec: RunSpec
    job_name: str
    notes: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return Path(self.spec.config_path)


def tracking_uri(cfg: Config) -> str | None:
    """The tracking URI resolved here (absolute sqlite path), so every rank on every node and
    every requeue writes to the store the submitter meant, whatever their working directory."""
    if not cfg.tracking.enabled:
        return cfg.tracking.uri
    from glamhpc.tracking import resolve_uri

    return resolve_uri(cfg.tracking.uri)


def run_dir_for(cfg: Config, run_name: str) -> Path:
    """``<run_root>/<experiment>/<run_name>``: the trainer's run directory (the contract in
    docs/CONTRACTS.md; a test pins it to glamhpc.rl.trainer.run_dir_for). Computed here so that
    submitting never imports torch: seconds saved on every submit."""
    return Path(cfg.train.run_root) / cfg.experiment / run_name


def default_run_name(cfg: Config) -> str:
    """``<name>-s<seed>-<UTC timestamp>``, as `glamhpc train` names an unnamed run."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{cfg.name}-s{cfg.seed}-{stamp}"


def plan_run(
    cfg: Config,
    run_name: str | None = None,
    workdir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> RunPlan:
    """Resolve one run: resources, run name and directory, the job's spec. Writes nothing."""
    res = resolve(cfg)
    if res.container:
        _check_container(res)
    name = run_name or default_run_name(cfg)
    _check_name(name)
    workdir = (workdir or Path.cwd()).resolve()
    uri = tracking_uri(cfg)
    if uri != cfg.tracking.uri:
        cfg = cfg.model_copy(deep=True)
        cfg.tracking.uri = uri
    run_dir = (workdir / run_dir_for(cfg, name)).resolve()
    folder = run_dir / LAUNCH_FOLDER
    tags = {"launcher": "glamhpc submit", "executor": res.executor, "nodes": str(res.nodes)}
    tags.update(extra_tags or {})
    env = {"GLAMHPC_RUN_TAGS": json.dumps(tags, sort_keys=True)}
    env.update(extra_env or {})
    spec = RunSpec(
        config_path=str(folder / "config.yaml"),
        run_name=name,
        run_dir=str(run_dir),
        workdir=str(workdir),
        log_dir=str(folder / "torchrun"),
        env=env,
    )
    notes = []
    if (run_dir / DONE_MARKER).exists():
        notes.append(f"{run_dir} is already finished ({DONE_MARKER}); the job will exit at once")
    elif (run_dir / "checkpoints").exists():
        notes.append(f"{run_dir} exists: the job resumes it from its latest checkpoint")
    return RunPlan(cfg, res, name, run_dir, folder, spec, job_name("run", name), notes)


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or any(c.isspace() for c in name):
        raise ConfigError(f"bad run name '{name}': use letters, digits, '-', '_' or '.'")


def _check_container(res: Resources) -> None:
    from glamhpc.containers import ContainerError, engine_for_image, wrap_command

    try:
        wrap_command(["true"], str(res.container), engine=engine_for_image(str(res.container)))
    except ContainerError as exc:
        raise LaunchError(f"--container {res.container}: {exc}") from None


def node_command_preview(plan: RunPlan) -> str:
    """The per-node command with the allocation-dependent parts as shell-style placeholders."""
    res = plan.resources
    rendezvous = None
    if res.nodes > 1:
        rendezvous = Rendezvous("$FIRST_NODE", 0, "glamhpc-$SLURM_JOB_ID")
    argv = torchrun_argv(
        train_argv=plan.spec.train_argv(),
        nnodes=res.nodes,
        nproc_per_node=res.nproc_per_node,
        rendezvous=rendezvous,
        log_dir=os.path.join(plan.spec.log_dir, "$JOB_ID-node$NODE"),
        max_restarts=res.max_restarts,
        shutdown_timeout_s=res.shutdown_timeout_s,
    )
    if rendezvous is not None:
        argv = [a.replace("$FIRST_NODE:0", "$FIRST_NODE:$PORT") for a in argv]
    text = shlex.join(argv)
    if res.container:
        text = f"[inside {res.container}] {text}"
    return text


def format_plan(plan: RunPlan) -> str:
    """Human-readable plan: what runs where, and the batch script for Slurm."""
    res = plan.resources
    device = (
        f"{res.gpus_per_node} GPU(s)" if res.gpus_per_node else f"{res.nproc_per_node} CPU rank(s)"
    )
    limit = f"{res.time_min} min" if res.time_min is not None else "partition default"
    lines = [
        f"run          {plan.run_name}",
        f"run dir      {plan.run_dir}",
        f"executor     {res.executor}",
        f"nodes        {res.nodes} x {device} = world size {res.world_size}",
        f"cpus/node    {res.cpus_per_task}",
        f"time limit   {limit} (USR2 {res.signal_delay_s}s before it; "
        f"at most {res.max_requeues} requeues)",
        f"tracking     {plan.cfg.tracking.uri if plan.cfg.tracking.enabled else 'disabled'}",
        f"job name     {plan.job_name}",
        f"config       {plan.config_path} (snapshot written at submit)",
        f"node command {node_command_preview(plan)}",
    ]
    lines += [f"note         {note}" for note in plan.notes]
    if res.executor == "slurm":
        lines += ["", "# sbatch script", render_sbatch(res, plan.folder, plan.job_name)]
    return "\n".join(lines)


@dataclass
class Submitted:
    job_id: str
    plan: RunPlan
    job: Any

    @property
    def log_path(self) -> Path:
        return self.plan.folder / f"{self.job_id}_0_log.out"


def active_jobs(name: str) -> list[str]:
    """Ids of this user's queued or running Slurm jobs with exactly this job name."""
    out = slurm_command(["squeue", "-h", "--me", "-n", name, "-o", "%i"])
    return [line.strip() for line in out.splitlines() if line.strip()]


def refuse_if_active(name: str, what: str, hint: str = "") -> None:
    """Stop before submitting a second job for a run or sweep that still has one."""
    running = active_jobs(name)
    if running:
        raise LaunchError(f"{what} is already queued or running as job {', '.join(running)}{hint}")


def submit_run(plan: RunPlan) -> Submitted:
    """Write the snapshot and submit; on any failure remove what this call created."""
    res = plan.resources
    if res.executor == "slurm":
        require_slurm()
        refuse_if_active(
            plan.job_name,
            f"run {plan.run_name}",
            "; cancel it first (glamhpc cancel) or use another --run-name",
        )
    created = _create_dirs(plan.run_dir, plan.folder)
    try:
        _write_text(plan.config_path, to_yaml(plan.cfg))
        executor = make_executor(res, plan.folder, plan.job_name)
        with sbatch_errors():
            job = executor.submit(TorchrunJob(res), plan.spec)
    except BaseException:
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        raise
    registry.append(
        registry.JobRecord(
            job_id=str(job.job_id),
            kind="run",
            name=plan.run_name,
            executor=res.executor,
            folder=str(plan.folder),
            runs=[plan.run_name],
            run_dirs=[str(plan.run_dir)],
            experiment=plan.cfg.experiment,
            tracking_uri=plan.cfg.tracking.uri,
            workdir=plan.spec.workdir,
        )
    )
    return Submitted(str(job.job_id), plan, job)


def _create_dirs(*paths: Path) -> list[Path]:
    """mkdir -p each path; return the ones that did not exist (the ones to remove on failure)."""
    created = []
    for path in paths:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        if missing:
            created.append(missing[-1])
        path.mkdir(parents=True, exist_ok=True)
    return created


def _write_text(path: Path, text: str) -> None:
    from glamhpc.fsutil import atomic_write_text

    atomic_write_text(path, text)
