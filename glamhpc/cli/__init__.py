"""The `glamhpc` command line: one Typer app; each area registers its commands from its own module.

The command modules stay thin (parse, validate, call library functions, print). Splitting them by
area keeps every module small and lets the areas evolve independently.
"""

from __future__ import annotations

import importlib

import typer

from glamhpc import __version__

app = typer.Typer(
    name="glamhpc",
    help="GLAM learners (FLAN-T5 policies fine-tuned with PPO) on BabyAI-Text, laptop to Slurm.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Every area module registers its commands on `app` when imported.
_AREAS = (
    "play",
    "train",
    "plan",
    "models",
    "tracking",
    "launch",
    "containers",
    "evaluate",
    "cluster",
    "demos",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"glamhpc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """GLAM on BabyAI-Text: play, train, track, distribute, submit to Slurm, evaluate."""


for _area in _AREAS:
    importlib.import_module(f"glamhpc.cli.{_area}")


def main() -> None:
    import os

    # MLflow's store set-up logs at INFO on every start and transformers draws a bar for every
    # save; users need their warnings only (an explicit setting by the user wins).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    app()
