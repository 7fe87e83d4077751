"""Helpers shared by the command modules: one-line errors instead of tracebacks."""

from __future__ import annotations

from typing import NoReturn

import typer

from glamhpc.config import Config, ConfigError, load_config
from glamhpc.inputs.errors import cut

#: Longest error line printed: whatever a message quotes, the user reads one short line.
LINE_MAX = 500


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {cut(message, LINE_MAX)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def load_or_exit(path: str | None, overrides: list[str]) -> Config:
    """Load and validate; a bad config stops here, before anything runs or is written."""
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        fail(str(exc))
