"""`glamhpc runs`, `report`, `sync`, `tracking-server`: MLflow from the terminal.

Thin: parse, call glamhpc.report / glamhpc.tracking, print. User mistakes (unknown experiment,
unreachable server, wrong run dir) are one red line and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glamhpc.cli import app
from glamhpc.cli.common import fail

if TYPE_CHECKING:
    from glamhpc.tracking.service import ServiceSpec, TrackingService

MAIN_METRIC = "Main/success_rate"
"""glamhpc.tracking.runs.MAIN_SUCCESS_KEY, spelled out: the CLI imports no tracking at start."""
URI_HELP = "Tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)."


def _quiet_mlflow() -> None:
    # MLflow logs store migrations at INFO on first use of a database: noise in a table.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _deliver_handed_over() -> dict[str, int]:
    """Complete the delivery of journals that jobs handed over (glamhpc.tracking.handover);
    returns run id -> points still undelivered, for the table."""
    from glamhpc.tracking.handover import delivery_step, undelivered_by_run_id

    for line in delivery_step():
        typer.secho(line, err=True, fg=typer.colors.YELLOW)
    return undelivered_by_run_id()


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


@app.command("runs")
def runs_cmd(
    experiment: str | None = typer.Argument(
        None, help="Experiment name (default: every experiment)."
    ),
    uri: str | None = typer.Option(None, "--uri", help=URI_HELP),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Newest N runs."),
    metric: str = typer.Option(MAIN_METRIC, "--metric", help="Metric for latest/best."),
) -> None:
    """Table of runs: name, status, frames, latest & best success rate, steps/s, job state."""
    from rich.console import Console
    from rich.table import Table

    from glamhpc.report import list_runs
    from glamhpc.tracking import TrackingError

    _quiet_mlflow()
    undelivered = _deliver_handed_over()
    try:
        resolved, rows = list_runs(experiment, uri, limit, metric)
    except TrackingError as exc:
        fail(str(exc))
    # Not a terminal (a pipe, a log file): rich would squeeze the table into 80 columns.
    console = Console() if Console().is_terminal else Console(width=200)
    if not rows:
        where = f"experiment '{experiment}'" if experiment else "any experiment"
        console.print(f"no runs in {where} at {resolved}")
        return
    table = Table(
        title=f"{experiment or 'all experiments'} @ {resolved}  (latest/best: {metric})",
        title_justify="left",
    )
    show_exp = experiment is None
    if show_exp:
        table.add_column("experiment")
    for name, justify in (
        ("run", "left"),
        ("status", "left"),
        ("frames", "right"),
        ("latest", "right"),
        ("best", "right"),
        ("steps/s", "right"),
        ("job state", "left"),
        ("run id", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    colors = {"FINISHED": "green", "RUNNING": "cyan", "FAILED": "red", "KILLED": "yellow"}
    for row in rows:
        name = f"  └ {row.name}" if row.parent else row.name
        status = f"[{colors.get(row.status, 'white')}]{row.status}[/]"
        cells = [
            name,
            status,
            f"{row.frames:,}",
            _fmt(row.latest),
            _fmt(row.best),
            _fmt(row.steps_per_s, ".1f"),
            row.job_state
            + (
                f" (undelivered: {undelivered[row.run_id]} points)"
                if row.run_id in undelivered
                else ""
            ),
            row.run_id,
        ]
        table.add_row(*([row.experiment] if show_exp else []), *cells)
    console.print(table)


@app.command("report")
def report_cmd(
    target: str = typer.Argument(
        ..., help="Experiment name, sweep name (its parent run's name) or parent run id."
    ),
    group_by: str | None = typer.Option(
        None,
        "--group-by",
        "-g",
        help="Param/tag key(s), comma-separated (default: the swept keys minus the seed).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (default: reports/<sweep or experiment name>)."
    ),
    uri: str | None = typer.Option(None, "--uri", help=URI_HELP),
    metric: str = typer.Option(
        MAIN_METRIC, "--metric", help="Metric to plot vs frames (old runs' names work too)."
    ),
    band: str = typer.Option(
        "std",
        "--band",
        "--spread",
        help="Band across seeds: std, ci95 (95% bootstrap interval of the mean, seeded) or minmax.",
    ),
    smooth: int = typer.Option(
        1, "--smooth", min=1, help="Trailing mean over K points (curves and final value)."
    ),
    duplicates: str = typer.Option(
        "refuse",
        "--duplicates",
        help="Different runs with one seed in a group: refuse (default) or newest (keep it).",
    ),
) -> None:
    """Learning curves over seeds (PNG with the final-performance table) and a summary table
    (markdown + CSV).

    One line per group (mean over its distinct seeds, band: std, ci95 or min-max), success rate
    vs environment frames. A sweep (its name or parent run id) is written to
    reports/<sweep name>/ and logged to the parent run; an experiment to reports/<experiment>/.
    """
    from glamhpc.report import build_report, groups_markdown
    from glamhpc.tracking import TrackingError
    from glamhpc.tracking.curves import metric_label

    _quiet_mlflow()
    _deliver_handed_over()
    try:
        result = build_report(
            target, uri, group_by, out, metric, band, smooth, duplicates=duplicates
        )
    except TrackingError as exc:
        fail(str(exc))
    for note in result.notes:
        typer.secho(f"note: {note}", err=True, fg=typer.colors.YELLOW)
    typer.echo(groups_markdown(result.rows, metric_label(metric)))
    typer.echo(f"wrote {result.png}, {result.markdown}, {result.csv}")
    if result.parent_run_id:
        typer.echo(f"logged to the sweep's parent run {result.parent_run_id} (artifacts: report/)")
    if result.compare_url:
        typer.echo(f"compare in MLflow: {result.compare_url}")


@app.command("sync")
def sync_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (runs/<experiment>/<run-name>)."),
    uri: str | None = typer.Option(
        None, "--uri", help="Tracking URI (default: the one the run was started with)."
    ),
    timeout: float = typer.Option(300.0, "--timeout", help="Give up after this many seconds."),
) -> None:
    """Send what a run's local journal still holds to MLflow (after an outage or offline run).

    Replays in order, creates the run first if it was started offline, never duplicates a step.
    """
    from glamhpc.tracking import TrackingError, sync_run_dir

    _quiet_mlflow()
    if not run_dir.is_dir():
        fail(f"run directory not found: {run_dir}")
    try:
        run_id, done, pending = sync_run_dir(run_dir, uri, timeout)
    except TrackingError as exc:
        fail(str(exc))
    if not done:
        fail(f"{pending} bytes of {run_dir} still not delivered (server unreachable?); re-run sync")
    typer.echo(f"{run_dir}: journal delivered to MLflow run {run_id}")


@app.command("tracking-server")
def tracking_server_cmd(
    backend: str | None = typer.Option(
        None,
        "--backend",
        help="sqlite (one file, one machine) or postgres (clusters, sweeps: starts a private "
        "PostgreSQL in --data, or uses --backend-store-uri). Default: sqlite.",
    ),
    data: Path = typer.Option(
        Path("."), "--data", help="Folder for the store, artifacts and secrets (default: cwd)."
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Interface; 0.0.0.0 lets compute nodes connect (use it with --auth).",
    ),
    port: int = typer.Option(5000, "--port", help="TCP port (1-65535)."),
    workers: int | None = typer.Option(
        None, "--workers", help="Server processes (default: the CPU count, at most 4)."
    ),
    writers: int = typer.Option(
        128, "--writers", help="Expected concurrent runs: sizes the database connection pool."
    ),
    auth: bool = typer.Option(
        False,
        "--auth",
        help="MLflow basic-auth: admin from $MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD or "
        "DATA/secrets/credentials (created, 0600); writers set MLFLOW_TRACKING_USERNAME/PASSWORD.",
    ),
    backend_store_uri: str | None = typer.Option(
        None,
        "--backend-store-uri",
        help="An existing store (sqlite:///..., postgresql://user@host/db with the password in "
        "$PGPASSFILE, never in the URI).",
    ),
    artifacts_destination: str | None = typer.Option(
        None, "--artifacts-destination", help="Artifact root (default DATA/mlartifacts)."
    ),
    allowed_hosts: str | None = typer.Option(
        None, "--allowed-hosts", help="Host headers to accept (default: this machine's names)."
    ),
    detach: bool = typer.Option(
        False, "--detach", help="Run in the background and return once it answers."
    ),
    log_file: Path | None = typer.Option(
        None, "--log-file", help="Server log (default with --detach: DATA/mlflow-server-PORT.log)."
    ),
) -> None:
    """Start a real MLflow tracking server (e.g. on a login node) and print the URI to export.

    When you need it: the default SQLite file is fine for one process at a time, but many
    concurrent jobs (a Slurm array, a sweep) must not write one SQLite file on a network
    filesystem (NFS/Lustre/GPFS locking is unreliable: "database is locked" errors or a corrupt
    store). Run this once where the jobs can reach it, `export MLFLOW_TRACKING_URI=...` before
    `glamhpc submit`/`sweep`, and every job logs over HTTP into one store; --backend postgres
    for sweeps of many runs. SIGTERM, SIGHUP or Ctrl-C stop it and everything it started.
    See docs/TRACKING.md.
    """
    from glamhpc.tracking import TrackingError
    from glamhpc.tracking.server import default_workers
    from glamhpc.tracking.service import ServiceSpec, TrackingService, validate

    spec = ServiceSpec(
        data=data.resolve(),
        backend=backend,
        host=host,
        port=port,
        workers=workers if workers is not None else default_workers(),
        writers=writers,
        auth=auth,
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        allowed_hosts=allowed_hosts,
        log_path=log_file.resolve() if log_file else None,
    )
    try:
        validate(spec)
    except TrackingError as exc:
        fail(str(exc))
    if spec.exposed_without_auth:
        typer.secho(
            f"WARNING: --host {host} WITHOUT --auth: anyone who can reach port {port} of this "
            f"machine can read, change and delete every run. Use --auth (docs/TRACKING.md).",
            fg=typer.colors.YELLOW,
            bold=True,
            err=True,
        )
    if detach:
        _detach(spec)
        return
    _serve(TrackingService(spec))


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def _serve(service: TrackingService) -> None:
    """Foreground: SIGTERM, SIGHUP (the login shell closed) and SIGINT stop the MLflow server's
    whole process group and the PostgreSQL it started, also while they are still booting."""
    from glamhpc.tracking import TrackingError

    stops = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in stops}
    spec = service.spec
    try:
        typer.echo(f"starting mlflow server ({spec.backend}, {spec.workers} workers) on "
                   f"{spec.host}:{spec.port} ...")  # fmt: skip
        service.start()
        _announce(service)
        typer.echo("Ctrl-C (or SIGTERM/SIGHUP) stops it.")
        service.wait()
        process = service.mlflow.process if service.mlflow else None
        fail(f"mlflow server exited with code {process.returncode if process else '?'}")
    except TrackingError as exc:
        fail(str(exc))
    except _Stop as stop:
        typer.echo(
            f"{stop}: stopping the mlflow server{' and PostgreSQL' if service.postgres else ''}"
        )
    finally:
        for sig in stops:  # a second Ctrl-C must not cut the shutdown short
            signal.signal(sig, signal.SIG_IGN)
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo("stopped")


def _announce(service: TrackingService) -> None:
    from glamhpc.tracking.server import public_uri

    spec = service.spec
    server = service.mlflow
    assert server is not None
    uri = public_uri(spec.host, spec.port)
    typer.echo(f"MLflow UI and tracking API at {uri} (store {server.backend_store_uri})")
    pids = f"mlflow server process group {server.pgid}"
    if service.postgres is not None and service.postgres.process is not None:
        pids += f"; postgres pid {service.postgres.process.pid}"
    typer.echo(pids)
    typer.echo("In the shell that submits jobs (and in your ~/.bashrc if you like):")
    typer.echo(f"  export MLFLOW_TRACKING_URI={uri}")
    if spec.auth:
        typer.echo(
            f"basic-auth on; admin credentials from {service.admin_source}. Writers authenticate "
            f"with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in their environment, "
            f"or with that file copied to ~/.mlflow/credentials (chmod 600)"
        )
    if spec.host in ("127.0.0.1", "localhost"):
        typer.echo(
            f"(bound to loopback: only this machine can log; --host 0.0.0.0 --auth for compute "
            f"nodes of {socket.gethostname()})"
        )


def _detach(spec: ServiceSpec) -> None:
    """Run this same command in the foreground in a new session (so that one SIGTERM to its pid
    stops everything it started), wait until the server answers, print how to stop it."""
    import subprocess
    import sys

    from glamhpc.tracking.secretfiles import open_log
    from glamhpc.tracking.server import public_uri, wait_healthy

    log = spec.log_path or spec.data / f"mlflow-server-{spec.port}.log"
    args = [sys.executable, "-m", "glamhpc", "tracking-server", "--backend", str(spec.backend),
            "--data", str(spec.data), "--host", spec.host, "--port", str(spec.port),
            "--workers", str(spec.workers), "--writers", str(spec.writers)]  # fmt: skip
    for flag, value in (
        ("--backend-store-uri", spec.backend_store_uri),
        ("--artifacts-destination", spec.artifacts_destination),
        ("--allowed-hosts", spec.allowed_hosts),
    ):
        if value:
            args += [flag, value]
    if spec.auth:
        args.append("--auth")
    spec.data.mkdir(parents=True, exist_ok=True)
    with open_log(log) as out:
        child = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    probe_host = "127.0.0.1" if spec.host in ("0.0.0.0", "") else spec.host
    try:
        exit_code = wait_healthy(child, f"http://{probe_host}:{spec.port}", 300)
    except TimeoutError:
        os.killpg(child.pid, signal.SIGTERM)
        fail(f"the server did not answer within 300 s; see {log}")
    if exit_code is not None:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        fail(f"the server exited with code {exit_code} while starting "
             f"(log {log}: {tail[0] if tail else 'empty'})")  # fmt: skip
    typer.echo(f"MLflow tracking server running in the background, pid {child.pid}; log {log}")
    typer.echo(f"  export MLFLOW_TRACKING_URI={public_uri(spec.host, spec.port)}")
    typer.echo(f"stop it (and everything it started) with: kill -TERM {child.pid}")
