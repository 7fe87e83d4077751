"""`glamhpc runs`, `report`, `sync`, `tracking-server`: MLflow from the terminal.

Thin: parse, call glamhpc.report / glamhpc.tracking, print. User mistakes (unknown experiment,
unreachable server, wrong run dir) are one red line and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import typer

from glamhpc.cli import app
from glamhpc.cli.common import fail

URI_HELP = "Tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)."


def _quiet_mlflow() -> None:
    # MLflow logs store migrations at INFO on first use of a database: noise in a table.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


@app.command("runs")
def runs_cmd(
    experiment: str | None = typer.Argument(
        None, help="Experiment name (default: every experiment)."
    ),
    uri: str | None = typer.Option(None, "--uri", help=URI_HELP),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Newest N runs."),
    metric: str = typer.Option("success_rate", "--metric", help="Metric for latest/best."),
) -> None:
    """Table of runs: name, status, frames, latest & best success rate, steps/s, job state."""
    from rich.console import Console
    from rich.table import Table

    from glamhpc.report import list_runs
    from glamhpc.tracking import TrackingError

    _quiet_mlflow()
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
            row.job_state,
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
        None, "--out", "-o", help="Output folder (default: reports/<target>)."
    ),
    uri: str | None = typer.Option(None, "--uri", help=URI_HELP),
    metric: str = typer.Option("success_rate", "--metric", help="Metric to plot vs frames."),
    spread: str = typer.Option("std", "--spread", help="Band over seeds: std or minmax."),
    smooth: int = typer.Option(1, "--smooth", min=1, help="Trailing mean over N points."),
) -> None:
    """Learning curves over seeds (PNG) and a summary table (markdown + CSV).

    One line per group (mean over its runs, band: std or min-max), success rate vs environment
    frames. For a sweep (its parent run id) the files are also logged to the parent run.
    """
    from glamhpc.report import build_report, groups_markdown
    from glamhpc.tracking import TrackingError

    _quiet_mlflow()
    try:
        result = build_report(target, uri, group_by, out, metric, spread, smooth)
    except TrackingError as exc:
        fail(str(exc))
    typer.echo(groups_markdown(result.rows, metric))
    typer.echo(f"wrote {result.png}, {result.markdown}, {result.csv}")
    if result.parent_run_id:
        typer.echo(f"logged to the sweep's parent run {result.parent_run_id} (artifacts: report/)")


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
    backend_store_uri: str | None = typer.Option(
        None,
        "--backend-store-uri",
        help="Where runs are stored (default sqlite:///<cwd>/mlflow.db; postgresql://... for "
        "heavy use).",
    ),
    artifacts_destination: str | None = typer.Option(
        None, "--artifacts-destination", help="Artifact root (default <cwd>/mlartifacts)."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface; 0.0.0.0 lets compute nodes connect (no auth!)."
    ),
    port: int = typer.Option(5000, "--port", help="TCP port."),
    allowed_hosts: str | None = typer.Option(
        None, "--allowed-hosts", help="Host headers to accept (default: this machine's names)."
    ),
    detach: bool = typer.Option(
        False, "--detach", help="Leave the server running in the background and return."
    ),
    log_file: Path | None = typer.Option(
        None, "--log-file", help="Server log (default with --detach: mlflow-server-PORT.log)."
    ),
) -> None:
    """Start a real MLflow tracking server (e.g. on a login node) and print the URI to export.

    When you need it: the default SQLite file is fine for one process at a time, but many
    concurrent jobs (a Slurm array, a sweep) must not write one SQLite file on a network
    filesystem (NFS/Lustre/GPFS locking is unreliable: "database is locked" errors or a corrupt
    store). Run this once where the jobs can reach it, `export MLFLOW_TRACKING_URI=...` before
    `glamhpc submit`/`sweep`, and every job logs over HTTP into one store. See docs/TRACKING.md.
    """
    from glamhpc.tracking import TrackingError
    from glamhpc.tracking.server import public_uri, start_server

    if detach and log_file is None:
        log_file = Path(f"mlflow-server-{port}.log").resolve()
    typer.echo(f"starting mlflow server on {host}:{port} ...")
    try:
        server = start_server(
            backend_store_uri,
            artifacts_destination,
            host=host,
            port=port,
            log_path=log_file,
            allowed_hosts=allowed_hosts,
        )
    except TrackingError as exc:
        fail(str(exc))
    uri = public_uri(host, port)
    typer.echo(f"MLflow UI and tracking API at {uri} (store {server.backend_store_uri})")
    typer.echo("In the shell that submits jobs (and in your ~/.bashrc if you like):")
    typer.echo(f"  export MLFLOW_TRACKING_URI={uri}")
    if host in ("127.0.0.1", "localhost"):
        typer.echo(
            f"(bound to loopback: only this machine can log; --host 0.0.0.0 for compute nodes "
            f"of {socket.gethostname()})"
        )
    if detach:
        typer.echo(f"running in the background, pid {server.pgid}; log {log_file}")
        typer.echo(f"stop it with: kill -TERM -- -{server.pgid}")
        return
    typer.echo("Ctrl-C stops it.")
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
        fail(
            f"mlflow server exited with code {server.process.returncode if server.process else '?'}"
        )
    except KeyboardInterrupt:
        typer.echo("stopping mlflow server ...")
    finally:
        server.stop()
