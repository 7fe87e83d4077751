"""Wilson intervals, table rows, CSV / markdown and metric names (pure functions)."""

from __future__ import annotations

import csv
import io
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glamhpc.evaluate.episodes import Episode
from glamhpc.evaluate.stats import (
    kind_summaries,
    metrics,
    summarize,
    to_csv,
    to_markdown,
    wilson_interval,
)


def _ep(stream: int, success: bool, ret: float = 0.0, length: int = 10, kind: str = "goto"):
    return Episode(stream, 0, success, ret, length, kind)


def test_wilson_reference_values() -> None:
    # Closed forms: 0/n -> upper z^2 / (n + z^2); 5/10 -> the textbook (0.2366, 0.7634).
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + z2)), 1.0)
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_estimate_and_is_symmetric(case: tuple[int, int]) -> None:
    wins, n = case
    low, high = wilson_interval(wins, n)
    assert 0.0 <= low <= wins / n <= high <= 1.0
    flipped = wilson_interval(n - wins, n)
    assert math.isclose(low, 1 - flipped[1], abs_tol=1e-12)
    assert math.isclose(high, 1 - flipped[0], abs_tol=1e-12)


def test_summary_row_csv_markdown_and_metrics() -> None:
    episodes = [_ep(0, True, 0.9, 8), _ep(1, False, 0.0, 64, "open"), _ep(2, True, 0.5, 40)]
    row = summarize("agent", "paper", "mixed_test", "BabyAI-MixedTestLocal-v0", episodes)
    assert (row.episodes, row.successes) == (3, 2)
    assert row.success_rate == pytest.approx(2 / 3)
    assert (row.ci95_low, row.ci95_high) == wilson_interval(2, 3)
    assert row.mean_return == pytest.approx(1.4 / 3) and row.mean_length == pytest.approx(112 / 3)

    parsed = list(csv.DictReader(io.StringIO(to_csv([row]))))
    assert (
        parsed[0]["item"] == "mixed_test" and float(parsed[0]["success_rate"]) == row.success_rate
    )
    md = to_markdown([row]).splitlines()
    assert md[0].startswith("| agent | suite | item | level | episodes |")
    assert "| 0.667 |" in md[2]

    got = metrics([row])
    assert got["eval/paper/mixed_test/success_rate"] == row.success_rate
    assert got["eval/paper/mixed_test/ci95_high"] == row.ci95_high
    assert got["eval/paper/mixed_test/episodes"] == 3.0
    assert set(got) == {
        f"eval/paper/mixed_test/{k}"
        for k in ("success_rate", "ci95_low", "ci95_high", "mean_return", "mean_length", "episodes")
    }

    kinds = kind_summaries("agent", "paper", "mixed_test", episodes)
    assert [(k.task_kind, k.episodes, k.successes) for k in kinds] == [
        ("goto", 2, 2),
        ("open", 1, 0),
    ]
