"""One rich progress bar style for long work (training frames, evaluation episodes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress_bar(unit: str, *fields: str, transient: bool = False) -> Iterator[Any]:
    """A rich ``Progress``: unit label, bar, done/total, one text column per field template
    (e.g. ``"success {task.fields[success]}"``), elapsed time and ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn(f"[bold]{unit}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(field) for field in fields),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=transient) as progress:
        yield progress
