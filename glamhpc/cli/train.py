"""`glamhpc train` (and `glamhpc config`): run a learner on this machine or as one torchrun rank."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glamhpc.cli import app
from glamhpc.cli.common import fail, load_or_exit

if TYPE_CHECKING:
    from glamhpc.config import Config


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
    smoke: bool = typer.Option(
        False,
        "--smoke",
        help="Check the config's code paths in a minute on a shrunk model (2 updates + resume).",
    ),
) -> None:
    """Train a GLAM agent (PPO on BabyAI-Text); re-running with the same --run-name resumes."""
    cfg = load_or_exit(config, set_)
    if smoke:
        raise typer.Exit(_smoke(cfg, config or "embedded defaults"))
    from glamhpc.config import training_precision_problem

    precision = training_precision_problem(cfg)
    if precision:
        # Here, before a run directory or a rank exists: one line instead of one per rank.
        fail(precision)
    if nproc > 0:
        from glamhpc.agents import one_rank_problem
        from glamhpc.config import ConfigError, env_split_problem
        from glamhpc.launch.local import run_local

        problem = one_rank_problem(cfg.agent, nproc) or env_split_problem(cfg.env.num_envs, nproc)
        if problem:
            # Checked here so the user gets one line, not one error per rank plus torchrun's.
            fail(problem)
        from glamhpc.rundir import RunDir, default_run_name

        try:
            name = run_name or default_run_name(cfg)
            # Rank 0 takes the run's lock itself; asking here first turns a busy run directory
            # into one line instead of a failed rank and torchrun's report.
            with RunDir.of(cfg, name).lock(cfg.train.run_dir_mode):
                pass
            code = run_local(cfg, name, nproc)
        except ConfigError as exc:  # a bad --run-name, a run directory in use
            fail(str(exc))
        raise typer.Exit(code)
    from glamhpc.agents import train_agent as run_training
    from glamhpc.checkpoint import CheckpointError
    from glamhpc.config import ConfigError
    from glamhpc.policy.models import ModelNotAvailableError
    from glamhpc.rl.ppo import NonFiniteError
    from glamhpc.rundir import RunDir, default_run_name

    rank0 = int(os.environ.get("RANK", "0")) == 0
    try:
        # Rank 0 holds the run directory while it trains, tracked or not (a second trainer
        # there gets one line naming the holder); the other ranks use the name rank 0 sends.
        name = (run_name or default_run_name(cfg)) if rank0 else run_name
        held = RunDir.of(cfg, name).lock(cfg.train.run_dir_mode) if name and rank0 else None
        with held or contextlib.nullcontext():
            run_dir = run_training(cfg, name)
    except (ConfigError, ModelNotAvailableError, CheckpointError) as exc:
        fail(str(exc))
    except NonFiniteError as exc:  # a failed run, not a usage error: exit 1 (Slurm: FAILED)
        fail(str(exc), code=1)
    if rank0:
        _summary(run_dir)


def _summary(run_dir: Path) -> None:
    """A table of the learning curve (about ten rows) and where to look next."""
    from rich.console import Console
    from rich.table import Table

    from glamhpc.checkpoint import Checkpointer, read_global_state
    from glamhpc.rundir import RunDir

    console = Console()
    latest = Checkpointer(RunDir(run_dir).checkpoints).find_latest()
    history = read_global_state(latest).get("history", []) if latest else []
    if history:
        table = Table(
            "update",
            "frames",
            "success",
            "return",
            "entropy",
            "llm Δ/θ",
            "steps/s",
            title="learning curve",
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
                _rel_update(h.get("health/llm/rel_update")),
                f"{h['env_steps_per_s']:.0f}",
            )
        console.print(table)
    console.print(f"run directory: {run_dir}")
    done = RunDir(run_dir).is_done()
    state = "finished" if done else "stopped (resume with the same command)"
    console.print(f"state: {state}; compare runs with `glamhpc runs` or `mlflow ui`")


def _smoke(cfg: Config, label: str) -> int:
    """Run `--smoke`, print the verdict table and, last, the RESULT line; 0 when it passed."""
    from rich.console import Console
    from rich.table import Table

    from glamhpc.config import ConfigError
    from glamhpc.launch.smoke import SmokeError, run_smoke
    from glamhpc.policy.shrink import ShrinkError

    console = Console()
    console.print(f"smoke check of {label}: shrunk model, 2 updates, then a resume ...")
    try:
        verdict = run_smoke(cfg, label)
    except (ConfigError, ShrinkError, SmokeError) as exc:
        fail(str(exc))
    table = Table("check", "value", "verdict", title=f"smoke: {label}")
    for row in verdict.rows():
        table.add_row(*row)
    console.print(table)
    sys.stdout.flush()
    print(verdict.result_line(), flush=True)
    return 0 if verdict.ok else 1


def _rel_update(value: float | None) -> str:
    # Runs from before update health, or with a frozen LLM, have no value.
    return "-" if value is None else f"{value:.1e}"


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


@app.command("node", hidden=True)
def node(
    config: str = typer.Argument(..., help="YAML config of the run."),
    run_name: str = typer.Option(..., "--run-name", "-n", help="The run's name."),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", min=1, help="Ranks on this node."),
    max_restarts: int = typer.Option(0, "--max-restarts", min=0, help="torchrun restarts."),
    shutdown_timeout: int = typer.Option(
        105, "--shutdown-timeout", min=1, help="Seconds the ranks get to save after a signal."
    ),
    print_run_dir: bool = typer.Option(
        False, "--print-run-dir", help="Only print the run directory and exit."
    ),
) -> None:
    """One node of a plain `sbatch` job (slurm/templates/glamhpc.sbatch): torchrun's agent."""
    from glamhpc.config import ConfigError
    from glamhpc.launch.slurm_node import NodeError, run_slurm_node
    from glamhpc.rundir import RunDir

    cfg = load_or_exit(config, [])
    try:
        run = RunDir.of(cfg, run_name, Path.cwd())
        if print_run_dir:
            sys.stdout.write(f"{run.path}\n")
            return
        code = run_slurm_node(cfg, config, run_name, nproc_per_node, max_restarts, shutdown_timeout)
    except (ConfigError, NodeError) as exc:
        fail(str(exc))
    raise typer.Exit(code)
