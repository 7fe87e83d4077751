"""`glamhpc submit | sweep | jobs | logs | cancel`: runs on local processes or Slurm."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer

from glamhpc.cli import app
from glamhpc.cli.common import fail, load_or_exit

if TYPE_CHECKING:
    from glamhpc.config import Config

_EXECUTOR_HELP = "local (real processes on this machine, the default) or slurm (sbatch)."


def _resource_options(
    executor: str | None,
    nodes: int | None,
    gpus_per_node: int | None,
    nproc_per_node: int | None,
    cpus_per_task: int | None,
    mem: str | None,
    time: str | None,
    partition: str | None,
    account: str | None,
    qos: str | None,
    constraint: str | None,
    container: str | None,
) -> dict[str, Any]:
    if executor is not None and executor not in ("local", "slurm"):
        fail(f"bad --executor '{executor}': use local or slurm")
    return {
        "executor": executor,
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "nproc_per_node": nproc_per_node,
        "cpus_per_task": cpus_per_task,
        "mem": mem,
        "time": time,
        "partition": partition,
        "account": account,
        "qos": qos,
        "constraint": constraint,
        "container": container,
    }


# Shared option declarations: `submit` and `sweep` take the same resource options.
_O_EXECUTOR = typer.Option(None, "--executor", "-e", help=_EXECUTOR_HELP)
_O_NODES = typer.Option(None, "--nodes", "-N", min=1, help="Nodes (one torchrun agent each).")
_O_GPUS = typer.Option(None, "--gpus-per-node", min=0, help="GPUs per node (= ranks per node).")
_O_NPROC = typer.Option(None, "--nproc-per-node", min=1, help="CPU ranks per node (no GPUs).")
_O_CPUS = typer.Option(None, "--cpus-per-task", min=1, help="CPUs per node task.")
_O_MEM = typer.Option(None, "--mem", help="Memory per node, Slurm syntax (64G).")
_O_TIME = typer.Option(None, "--time", "-t", help="Time limit, Slurm syntax (30, 04:00:00).")
_O_PARTITION = typer.Option(None, "--partition", "-p", help="Slurm partition.")
_O_ACCOUNT = typer.Option(None, "--account", "-A", help="Slurm account.")
_O_QOS = typer.Option(None, "--qos", help="Slurm QoS.")
_O_CONSTRAINT = typer.Option(None, "--constraint", "-C", help="Slurm node constraint.")
_O_CONTAINER = typer.Option(
    None, "--container", help="Run each node's command in this Apptainer .sif or Docker image."
)


def _launch_errors() -> tuple[type[BaseException], ...]:
    from glamhpc.config import ConfigError
    from glamhpc.launch.executors import LaunchError
    from glamhpc.tracking import TrackingError

    return (ConfigError, LaunchError, TrackingError)


@app.command()
def submit(
    config: str = typer.Argument(None, help="YAML config (omit for the embedded defaults)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Dotted override, repeatable."),
    run_name: str = typer.Option(
        None, "--run-name", "-n", help="Run name; an existing run of that name is resumed."
    ),
    executor: str = _O_EXECUTOR,
    nodes: int = _O_NODES,
    gpus_per_node: int = _O_GPUS,
    nproc_per_node: int = _O_NPROC,
    cpus_per_task: int = _O_CPUS,
    mem: str = _O_MEM,
    time: str = _O_TIME,
    partition: str = _O_PARTITION,
    account: str = _O_ACCOUNT,
    qos: str = _O_QOS,
    constraint: str = _O_CONSTRAINT,
    container: str = _O_CONTAINER,
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the plan (ranks, per-rank memory, resources, batch script); submit nothing.",
    ),
    smoke: bool = typer.Option(
        False,
        "--smoke",
        help="Run `train --smoke` as a short one-node job there and wait for its verdict.",
    ),
) -> None:
    """Submit one training run (torchrun on every node, requeued on preemption/time limit)."""
    from glamhpc.launch import apply_cli_options, format_plan, plan_run, submit_run

    cfg = load_or_exit(config, set_)
    options = _resource_options(
        executor,
        nodes,
        gpus_per_node,
        nproc_per_node,
        cpus_per_task,
        mem,
        time,
        partition,
        account,
        qos,
        constraint,
        container,
    )
    try:
        cfg = apply_cli_options(cfg, **options)
        if smoke:
            raise typer.Exit(_submit_smoke(cfg))
        plan = plan_run(cfg, run_name)
        if dry_run:
            typer.echo(format_plan(plan, memory=True))
            return
        submitted = submit_run(plan)
    except _launch_errors() as exc:
        fail(str(exc))
    typer.echo(f"submitted job {submitted.job_id} ({plan.resources.executor}): run {plan.run_name}")
    typer.echo(f"  run dir  {plan.run_dir}")
    typer.echo(f"  logs     glamhpc logs {submitted.job_id} --follow")
    typer.echo(f"  cancel   glamhpc cancel {submitted.job_id}")


def _submit_smoke(cfg: Config) -> int:
    """Submit the smoke job, wait for it, print its verdict line; its exit code."""
    from glamhpc.launch.smoke_job import submit_smoke

    submitted = submit_smoke(cfg)
    typer.echo(f"submitted smoke job {submitted.job_id}; waiting for its verdict")
    typer.echo(f"  log      glamhpc logs {submitted.job_id} --follow")
    try:
        outcome = submitted.outcome()
    except Exception as exc:  # submitit's FailedJobError: the job itself died
        fail(f"the smoke job failed ({type(exc).__name__}); read `glamhpc logs {submitted.job_id}`")
    typer.echo(outcome.result)
    return outcome.returncode


@app.command()
def sweep(
    sweep_file: str = typer.Argument(..., help="Sweep YAML (base config, grid/zip, seeds)."),
    max_parallel: int = typer.Option(
        None, "--max-parallel", "-k", min=1, help="Array elements running at once."
    ),
    name: str = typer.Option(
        None,
        "--name",
        help="Sweep name, also its run names' prefix (default: the file's `name` key, else "
        "the file name).",
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        "-s",
        help="Dotted override for every element, applied after the file's `set:`; repeatable.",
    ),
    max_size: int = typer.Option(
        None, "--max-size", min=1, help="Accept sweeps of up to this many elements (1024)."
    ),
    experiment: str = typer.Option(
        None,
        "--experiment",
        help="MLflow experiment of the sweep (default: the file's `experiment` key, else the "
        "sweep name).",
    ),
    executor: str = _O_EXECUTOR,
    nodes: int = _O_NODES,
    gpus_per_node: int = _O_GPUS,
    nproc_per_node: int = _O_NPROC,
    cpus_per_task: int = _O_CPUS,
    mem: str = _O_MEM,
    time: str = _O_TIME,
    partition: str = _O_PARTITION,
    account: str = _O_ACCOUNT,
    qos: str = _O_QOS,
    constraint: str = _O_CONSTRAINT,
    container: str = _O_CONTAINER,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the elements; submit nothing."),
) -> None:
    """Submit a sweep as ONE job array: one MLflow parent run, one child run per element."""
    from glamhpc.launch import format_sweep_plan, load_sweep, plan_sweep, submit_sweep
    from glamhpc.launch.sweep_file import with_experiment, with_overrides

    options = _resource_options(
        executor,
        nodes,
        gpus_per_node,
        nproc_per_node,
        cpus_per_task,
        mem,
        time,
        partition,
        account,
        qos,
        constraint,
        container,
    )
    try:
        spec = with_overrides(load_sweep(sweep_file, name), set_)
        if experiment:
            spec = with_experiment(spec, experiment)
        plan = plan_sweep(spec, max_parallel, max_size=max_size, **options)
        if dry_run:
            typer.echo(format_sweep_plan(plan))
            return
        submitted = submit_sweep(plan)
    except _launch_errors() as exc:
        fail(str(exc))
    kind = "array" if plan.resources.executor == "slurm" else "local driver"
    typer.echo(
        f"submitted sweep {spec.name} as {kind} {submitted.job_id}: {len(plan.elements)} runs, "
        f"at most {plan.max_parallel} at once"
    )
    if submitted.parent_run_id:
        typer.echo(f"  MLflow parent run {submitted.parent_run_id} (experiment {plan.experiment})")
        typer.echo(f"  compare  glamhpc report {spec.name}  (the sweep's log ends with the link)")
    typer.echo("  state    glamhpc jobs")
    typer.echo(f"  cancel   glamhpc cancel {spec.name}")
    from glamhpc.tracking.handover import delivery_step  # journals earlier jobs left behind

    for line in delivery_step():
        typer.secho(line, err=True, fg=typer.colors.YELLOW)


@app.command()
def jobs(
    since: str = typer.Option(
        "now-2days", "--since", help="Also show ended jobs since then (sacct syntax)."
    ),
) -> None:
    """This user's glamhpc jobs: id, array index, run, state, elapsed, nodes, progress (latest
    update, frames, success of the run), attempt (and why the job was last requeued)."""
    from rich.console import Console
    from rich.table import Table

    from glamhpc.launch.jobs import iter_table, list_jobs, table_headers

    try:
        rows, notes = list_jobs(since)
    except _launch_errors() as exc:
        fail(str(exc))
    for note in notes:
        typer.secho(note, err=True, fg=typer.colors.YELLOW)
    if not rows:
        typer.echo("no glamhpc jobs")
        return
    table = Table(*table_headers(), box=None)
    for cells in iter_table(rows):
        table.add_row(*cells)
    Console(width=max(100, Console().width)).print(table)


@app.command()
def logs(
    job: str = typer.Argument(
        ..., help="Job id, array element (123_4), run name, or a sweep (array id or name)."
    ),
    rank: int = typer.Option(None, "--rank", "-r", min=0, help="Only this global rank's lines."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
) -> None:
    """Print a job's output: every node's log, or one rank's lines (rank 0 prints one progress
    line per update). A sweep shows all its elements, each line prefixed with its run name."""
    from glamhpc.launch.logs import follow_all, read_all, resolve_log_targets

    try:
        targets = resolve_log_targets(job)
        if follow:
            # A sweep is asked again every poll: a local sweep starts its elements over time.
            several = len(targets) > 1 or bool(targets[0].label)
            finals = follow_all(
                (lambda: resolve_log_targets(job)) if several else (lambda: targets),
                sys.stdout,
                rank,
            )
            ended = "; ".join(f"job {job_id}: {state}" for job_id, state in finals.items())
            typer.secho(ended, err=True)
            return
        sys.stdout.write(read_all(targets, rank))
    except _launch_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def cancel(
    target: str = typer.Argument(..., help="Job id, array element, run name or sweep name."),
) -> None:
    """Cancel a job, an array element, or a whole sweep (its parent run is closed as KILLED)."""
    from glamhpc.launch.cancel import cancel as cancel_jobs

    try:
        done = cancel_jobs(target)
    except _launch_errors() as exc:
        fail(str(exc))
    typer.echo(f"cancelled {done.description}: {' '.join(done.job_ids)}")


@app.command()
def preempt(
    target: str = typer.Argument(..., help="Running job id, array element, run or sweep name."),
) -> None:
    """Rehearse a preemption: send a running Slurm job the signal Slurm sends before its time
    limit (USR2); the ranks save a checkpoint and the job requeues itself."""
    from glamhpc.launch.cancel import PREEMPT_SIGNAL
    from glamhpc.launch.cancel import preempt as preempt_job

    try:
        done = preempt_job(target)
    except _launch_errors() as exc:
        fail(str(exc))
    typer.echo(
        f"sent {PREEMPT_SIGNAL} to job {done.job_id} ({done.description}), as Slurm does before "
        "a time limit: the ranks save a checkpoint after the current update, then the job is "
        f"requeued as attempt {done.next_attempt} and resumes the same run (unless "
        f"launch.max_requeues is reached). Follow it: glamhpc logs {done.job_id} --follow"
    )
