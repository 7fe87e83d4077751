"""`glamhpc train` (and `glamhpc config`): run a learner on this machine or as one torchrun rank."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from glamhpc.cli import app
from glamhpc.cli.common import fail, load_or_exit


@app.command()
def train(
    config: str = typer.Argument(None, help="YAML config (omit for the embedded defaults)."),
    set_: list[str] = typer.Option(
        [], "--set", "-s", help="Dotted override, repeatable: --set env.num_envs=32."
    ),
    run_name: str = typer.Option(
        None, "--run-name", "-n", help="Run directory name; reusing a name resumes that run."
    ),
    nproc: int = typer.Option(
        0, "--nproc", help="Launch N local ranks with torchrun's elastic agent (0: this process)."
    ),
) -> None:
    """Train a GLAM agent (PPO on BabyAI-Text); re-running with the same --run-name resumes."""
    cfg = load_or_exit(config, set_)
    if nproc > 0:
        from glamhpc.config import env_split_problem
        from glamhpc.launch_local import run_torchrun

        problem = env_split_problem(cfg.env.num_envs, nproc)
        if problem:
            # Checked here so the user gets one line, not one error per rank plus torchrun's.
            fail(problem)

        raise typer.Exit(run_torchrun(nproc, config, set_, run_name, cfg))
    from glamhpc.config import ConfigError
    from glamhpc.policy.models import ModelNotAvailableError
    from glamhpc.rl.trainer import train as run_training

    try:
        run_dir = run_training(cfg, run_name)
    except (ConfigError, ModelNotAvailableError) as exc:
        fail(str(exc))
    if int(os.environ.get("RANK", "0")) == 0:
        _summary(run_dir)


def _summary(run_dir: Path) -> None:
    """A table of the learning curve (about ten rows) and where to look next."""
    from rich.console import Console
    from rich.table import Table

    from glamhpc.checkpoint import Checkpointer, read_global_state

    console = Console()
    latest = Checkpointer(run_dir / "checkpoints").find_latest()
    history = read_global_state(latest).get("history", []) if latest else []
    if history:
        table = Table(
            "update", "frames", "success", "return", "entropy", "steps/s", title="learning curve"
        )
        stride = max(1, len(history) // 10)
        rows = (
            history[::stride]
            if history[-1] is history[::stride][-1]
            else [*history[::stride], history[-1]]
        )
        for h in rows:
            success = h.get("success_rate")
            table.add_row(
                f"{h['update']:.0f}",
                f"{h['frames']:,}",
                "-" if success is None else f"{success:.2f}",
                f"{h.get('return_mean', float('nan')):.2f}",
                f"{h['entropy']:.3f}",
                f"{h['env_steps_per_s']:.0f}",
            )
        console.print(table)
    console.print(f"run directory: {run_dir}")
    state = "finished" if (run_dir / "DONE").exists() else "stopped (resume with the same command)"
    console.print(f"state: {state}; compare runs with `glamhpc runs` or `mlflow ui`")


@app.command("config")
def show_config(
    config: str = typer.Argument(None, help="YAML config (omit for the embedded defaults)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Dotted override, repeatable."),
    doc: bool = typer.Option(False, "--doc", help="Document every field instead."),
) -> None:
    """Print the fully resolved config (or every field with its default and meaning)."""
    from glamhpc.config import describe_fields, to_yaml

    if doc:
        from rich.console import Console
        from rich.table import Table

        table = Table("key", "default", "meaning")
        for key, default, text in describe_fields():
            table.add_row(key, repr(default), text)
        Console().print(table)
        return
    sys.stdout.write(to_yaml(load_or_exit(config, set_)))
