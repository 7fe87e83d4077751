"""Result statistics and tables: Wilson intervals, per-item summaries, CSV / markdown, metrics.

Pure functions over `glamhpc.evaluate.episodes.Episode` lists, so the numbers a user reads, the
files and the MLflow metrics all come from one place.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

from glamhpc.evaluate.episodes import Episode

__all__ = [
    "Z95",
    "ItemSummary",
    "KindSummary",
    "kind_summaries",
    "metric_key",
    "metrics",
    "summarize",
    "to_csv",
    "to_markdown",
    "wilson_interval",
]

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054

#: Metrics logged per suite item (MLflow keys `eval/<suite>/<item>/<name>`).
METRIC_FIELDS = ("success_rate", "ci95_low", "ci95_high", "mean_return", "mean_length", "episodes")


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Chosen over the normal (Wald) interval because success rates sit near 0 or 1 (random agents,
    the bot) where Wald collapses to a zero-width interval; Wilson stays inside [0, 1] and keeps
    its coverage for small n. ``n == 0`` gives the uninformative (0, 1).
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At p = 0 (p = 1) the lower (upper) bound is exactly 0 (1) analytically; float rounding
    # would give 1e-17 or 0.9999999999999999, which reads like a real bound in a table.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


@dataclass(frozen=True)
class ItemSummary:
    """One row of the results table: an agent on one suite item."""

    agent: str
    suite: str
    item: str
    level: str
    episodes: int
    successes: int
    success_rate: float
    ci95_low: float
    ci95_high: float
    mean_return: float
    mean_length: float


@dataclass(frozen=True)
class KindSummary:
    """Success of an agent on one task kind of one suite item (Mixed levels draw several)."""

    agent: str
    suite: str
    item: str
    task_kind: str
    episodes: int
    successes: int
    success_rate: float
    ci95_low: float
    ci95_high: float


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def summarize(
    agent: str, suite: str, item: str, level: str, episodes: Sequence[Episode]
) -> ItemSummary:
    """Table row of ``episodes`` (success rate, Wilson 95% CI, mean return and length)."""
    n = len(episodes)
    wins = sum(1 for e in episodes if e.success)
    low, high = wilson_interval(wins, n)
    return ItemSummary(
        agent=agent,
        suite=suite,
        item=item,
        level=level,
        episodes=n,
        successes=wins,
        success_rate=wins / n if n else float("nan"),
        ci95_low=low,
        ci95_high=high,
        mean_return=_mean([e.return_ for e in episodes]),
        mean_length=_mean([float(e.length) for e in episodes]),
    )


def kind_summaries(
    agent: str, suite: str, item: str, episodes: Sequence[Episode]
) -> list[KindSummary]:
    """Success per task kind, kinds sorted by name."""
    groups: dict[str, list[Episode]] = {}
    for e in episodes:
        groups.setdefault(e.task_kind, []).append(e)
    rows = []
    for kind in sorted(groups):
        group = groups[kind]
        wins = sum(1 for e in group if e.success)
        low, high = wilson_interval(wins, len(group))
        rows.append(
            KindSummary(agent, suite, item, kind, len(group), wins, wins / len(group), low, high)
        )
    return rows


def metric_key(suite: str, item: str, name: str) -> str:
    """MLflow key of a metric of one suite item: ``eval/<suite>/<item>/<name>``."""
    return f"eval/{suite}/{item}/{name}"


def metrics(rows: Sequence[ItemSummary]) -> dict[str, float]:
    """MLflow metrics of one agent's rows (NaN means of empty items are left out)."""
    out: dict[str, float] = {}
    for row in rows:
        for name in METRIC_FIELDS:
            value = float(getattr(row, name))
            if not math.isnan(value):
                out[metric_key(row.suite, row.item, name)] = value
    return out


def _cells(row: object, digits: int) -> dict[str, str]:
    values: Mapping[str, object] = asdict(row)  # type: ignore[call-overload]
    return {k: (f"{v:.{digits}f}" if isinstance(v, float) else str(v)) for k, v in values.items()}


def to_csv(rows: Sequence[ItemSummary] | Sequence[KindSummary]) -> str:
    """CSV with a header of the dataclass fields; floats at full precision (for re-analysis)."""
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(rows[0])], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in asdict(row).items()})
    return buf.getvalue()


def to_markdown(rows: Sequence[ItemSummary] | Sequence[KindSummary], digits: int = 3) -> str:
    """GitHub markdown table (numbers rounded to ``digits``; the CSV keeps full precision)."""
    if not rows:
        return ""
    names = [f.name for f in fields(rows[0])]
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join("---" for _ in names) + "|"]
    for row in rows:
        cells = _cells(row, digits)
        lines.append("| " + " | ".join(cells[n] for n in names) + " |")
    return "\n".join(lines) + "\n"
