"""Evaluation outputs: the rich table, CSV / markdown files, and MLflow metrics + artifacts.

Metrics are named ``eval/<suite>/<item>/<metric>`` (success_rate, ci95_low, ci95_high,
mean_return, mean_length, episodes) so the same item compares across runs in the MLflow UI. A
``--run`` evaluation logs into that training run (at the step of its training frames); anything
else gets a new run in the ``eval`` experiment.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glamhpc.evaluate.parts import episode_index
from glamhpc.evaluate.runner import EvalResult
from glamhpc.evaluate.stats import metrics, to_csv, to_markdown
from glamhpc.fsutil import atomic_write_text

__all__ = [
    "EVAL_EXPERIMENT",
    "log_to_mlflow",
    "output_tag",
    "render_table",
    "write_outputs",
]

EVAL_EXPERIMENT = "eval"


def output_tag(selection: Sequence[str], seed: int, greedy: bool) -> str:
    """Folder name of one evaluation, e.g. ``paper-seed1``: evaluations of other suites or
    seeds keep their own files (locally and as MLflow artifacts ``eval/<tag>/``)."""
    name = "+".join(selection) or "eval"
    stem = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)[:80]
    return f"{stem}-seed{seed}" + ("-greedy" if greedy else "")


def _episodes_csv(results: Sequence[EvalResult]) -> str:
    lines: list[list[Any]] = [
        ["agent", "suite", "item", "episode", "stream", "number", "success", "return", "length",
         "task_kind"]
    ]  # fmt: skip
    for result in results:
        streams = result.work.streams
        for entry in result.work.items:
            for ep in result.episodes[entry.key]:
                lines.append(
                    [
                        result.agent.label,
                        entry.suite,
                        entry.item.name,
                        episode_index(ep.stream, ep.number, streams),
                        ep.stream,
                        ep.number,
                        int(ep.success),
                        repr(ep.return_),
                        ep.length,
                        ep.task_kind,
                    ]
                )
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return buf.getvalue()


def _markdown(results: Sequence[EvalResult], header: Mapping[str, Any]) -> str:
    rows = [row for r in results for row in r.rows()]
    kinds = [row for r in results for row in r.kinds()]
    meta = ", ".join(f"{k} {v}" for k, v in header.items())
    return (
        f"# Evaluation\n\n{meta}\n\nSuccess rate with its Wilson 95% interval; mean return "
        "is the raw env reward.\n\n"
        + to_markdown(rows)
        + "\n## By task kind\n\n"
        + to_markdown(kinds)
    )


def write_outputs(
    out_dir: Path, results: Sequence[EvalResult], header: Mapping[str, Any]
) -> list[Path]:
    """Write ``results.csv``, ``results.md``, ``by_kind.csv`` and ``episodes.csv`` in ``out_dir``.

    The CSVs keep full precision (re-analysis, merging by hand); the markdown rounds.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [row for r in results for row in r.rows()]
    kinds = [row for r in results for row in r.kinds()]
    contents = {
        "results.csv": to_csv(rows),
        "results.md": _markdown(results, header),
        "by_kind.csv": to_csv(kinds),
        "episodes.csv": _episodes_csv(results),
    }
    paths = []
    for name, text in contents.items():
        path = out_dir / name
        atomic_write_text(path, text)
        paths.append(path)
    return paths


def render_table(results: Sequence[EvalResult], title: str | None = None) -> Any:
    """A rich Table: one row per agent and item."""
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for name in ("agent", "suite", "item"):
        table.add_column(name, no_wrap=True)
    for name in ("episodes", "success", "95% CI", "return", "length"):
        table.add_column(name, justify="right", no_wrap=True)
    for result in results:
        for row in result.rows():
            table.add_row(
                row.agent,
                row.suite,
                row.item,
                str(row.episodes),
                f"{row.success_rate:.3f}",
                f"[{row.ci95_low:.3f}, {row.ci95_high:.3f}]",
                f"{row.mean_return:.3f}",
                f"{row.mean_length:.1f}",
            )
    return table


def log_to_mlflow(
    result: EvalResult,
    files: Sequence[Path],
    uri: str,
    tag: str,
    params: Mapping[str, Any],
) -> str:
    """Log ``result``'s metrics and the table files; returns the MLflow run id used.

    Into ``result.agent.run_id`` when set (metrics at the step of the checkpoint's training
    frames), else into a new FINISHED run of the ``eval`` experiment.

    Raises:
        glamhpc.tracking.TrackingError: the store cannot be reached (one line).
    """
    from glamhpc.tracking.evals import EvalLog, log_evaluation

    agent = result.agent
    tags = {
        "glamhpc.eval.agent": agent.label,
        "glamhpc.eval.source": agent.source,
        "glamhpc.eval.last": tag,
    }
    if agent.run_id is None and agent.run_dir:
        # A new eval run of a checkpoint points back at the run that trained it.
        from glamhpc.tracking import read_run_id

        trained = read_run_id(Path(agent.run_dir))
        if trained:
            tags["glamhpc.eval.trained_run"] = trained
    log = EvalLog(
        metrics=metrics(result.rows()),
        step=agent.frames or 0,
        tags=tags,
        files=files,
        artifact_path=f"eval/{tag}",
        params=params,
        run_name=f"eval-{agent.label}-{tag}",
    )
    return log_evaluation(uri, log, agent.run_id, EVAL_EXPERIMENT)
