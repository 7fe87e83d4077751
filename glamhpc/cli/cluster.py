"""`glamhpc cluster install | up [--nodes N] | down [--purge] | status`: a real Slurm cluster on
this machine (1 to 3 "nodes"), to try multi-node submits and sweeps on a workstation.

The work is done by one shell script shipped inside the package (glamhpc/data/slurm-cluster.sh,
also reachable as slurm/cluster.sh in the repository): a pip-installed glamhpc finds it next to
its own code, without a source checkout. The script records every daemon's pid and stops only
those; see its header for details.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import typer

from glamhpc.cli import app
from glamhpc.cli.common import fail

cluster_app = typer.Typer(
    help="A real Slurm cluster on this machine (root; Debian/Ubuntu packages).",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")


def cluster_script() -> Path:
    """The packaged cluster script."""
    from importlib.resources import files

    path = Path(str(files("glamhpc") / "data" / "slurm-cluster.sh"))
    if not path.is_file():
        fail(f"the cluster script is missing from this installation ({path}); reinstall glamhpc")
    return path


def _run(*args: str) -> None:
    bash = shutil.which("bash")
    if bash is None:
        fail("bash is needed to run the cluster script")
    # bash SCRIPT rather than executing it: a wheel may not keep the executable bit.
    code = subprocess.call([bash, str(cluster_script()), *args], env=os.environ.copy())
    if code:
        raise typer.Exit(code)


@cluster_app.command("install")
def install() -> None:
    """apt-get the Slurm, munge and MariaDB packages (idempotent)."""
    _run("install")


@cluster_app.command("up")
def up(
    nodes: int = typer.Option(1, "--nodes", "-n", min=1, max=3, help="Slurm nodes (n1..nN)."),
) -> None:
    """Start munge, MariaDB + slurmdbd, slurmctld and N slurmd; wait until the nodes are idle."""
    _run("up", "--nodes", str(nodes))


@cluster_app.command("down")
def down(
    purge: bool = typer.Option(False, "--purge", help="Also delete state, accounting and logs."),
) -> None:
    """Cancel the cluster's jobs and stop the daemons `up` started (only those)."""
    _run("down", *(["--purge"] if purge else []))


@cluster_app.command("status")
def status() -> None:
    """Daemons and nodes of the local cluster (exit code 3 when it is down)."""
    _run("status")
