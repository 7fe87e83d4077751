"""glamhpc.report.stats and the compare link: pure functions on plain numbers."""

from __future__ import annotations

import json
from urllib.parse import unquote

import numpy as np
import pytest

from glamhpc.report.links import compare_runs_url, ui_base
from glamhpc.report.stats import (
    BANDS,
    DuplicateSeeds,
    band,
    bootstrap_band,
    bootstrap_mean_ci,
    one_per_seed,
)
from glamhpc.tracking.runs import MAIN_SUCCESS_KEY, mlflow_metric_keys
from glamhpc.ui.plots import DEFAULT_METRIC, align


def test_align_keeps_only_frames_every_curve_covers() -> None:
    grid, stack = align([([0, 10, 20, 30], [0, 1, 2, 3]), ([10, 20], [5, 6])])
    assert grid.tolist() == [10, 20]
    assert stack.tolist() == [[1, 2], [5, 6]]


def test_align_interpolates_onto_the_union_of_frames() -> None:
    grid, stack = align([([0, 10], [0.0, 1.0]), ([0, 5, 10], [1.0, 1.0, 1.0])])
    assert grid.tolist() == [0, 5, 10]
    assert stack[0].tolist() == [0.0, 0.5, 1.0]


def test_align_smooths_before_aligning() -> None:
    _, stack = align([([1, 2, 3, 4], [0.0, 1.0, 0.0, 1.0])], window=2)
    assert stack[0].tolist() == [0.0, 0.5, 0.5, 0.5]


def test_align_disjoint_runs_and_empty_input() -> None:
    grid, stack = align([([0, 1], [0.0, 1.0]), ([5, 6], [2.0, 3.0])])
    assert grid.tolist() == [1] and stack.shape == (2, 1)
    with pytest.raises(ValueError, match="no points"):
        align([([], [])])


def test_bands_std_minmax_and_one_seed() -> None:
    stack = np.array([[0.0, 1.0], [2.0, 3.0]])
    mean, low, high = band(stack, "std")
    assert mean.tolist() == [1.0, 2.0]
    assert high - mean == pytest.approx([2**0.5, 2**0.5])
    _, low, high = band(stack, "minmax")
    assert low.tolist() == [0.0, 1.0] and high.tolist() == [2.0, 3.0]
    for kind in BANDS:
        mean, low, high = band(np.array([[0.5, 0.7]]), kind)
        assert low.tolist() == mean.tolist() == high.tolist() == [0.5, 0.7]
    with pytest.raises(ValueError, match="band must be one of"):
        band(stack, "sem")


def test_bootstrap_is_seeded_bounded_and_narrows_with_more_seeds() -> None:
    rng = np.random.default_rng(7)
    few = rng.normal(0.5, 0.1, size=4)
    many = rng.normal(0.5, 0.1, size=64)
    assert bootstrap_mean_ci(few) == bootstrap_mean_ci(few)  # deterministic
    lo, hi = bootstrap_mean_ci(few)
    assert few.min() <= lo < few.mean() < hi <= few.max()
    lo_m, hi_m = bootstrap_mean_ci(many)
    assert hi_m - lo_m < hi - lo
    # Roughly the normal interval of the mean for many seeds (1.96 sigma / sqrt(n)).
    assert hi_m - lo_m == pytest.approx(2 * 1.96 * many.std(ddof=1) / 8, rel=0.25)
    assert bootstrap_mean_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))
    assert bootstrap_mean_ci(few, seed=1) != bootstrap_mean_ci(few, seed=2)


def test_bootstrap_band_resamples_whole_curves() -> None:
    # Two seeds perfectly anti-correlated: each resample's mean curve is one of three curves,
    # so every frame's bounds come from the same draws.
    stack = np.array([[0.0, 1.0], [1.0, 0.0]])
    low, high = bootstrap_band(stack)
    assert low.tolist() == [0.0, 0.0] and high.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="level"):
        bootstrap_band(stack, level=1.0)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_mean_ci([])


Run = tuple[str, str | None, list[float]]  # name, seed, values


def _pick(runs: list[Run], duplicates: str = "refuse") -> tuple[list[str], list[str]]:
    kept, notes = one_per_seed(
        runs, lambda r: r[1], lambda r: ([1, 2], r[2]), lambda r: r[0], duplicates
    )
    return [r[0] for r in kept], notes


def test_identical_duplicate_seeds_count_once() -> None:
    # The case: three runs with seed 1, two of them identical -> not n=4.
    runs: list[Run] = [("a", "1", [0.1, 0.2]), ("b", "1", [0.1, 0.2]), ("c", "2", [0.3, 0.4])]
    kept, notes = _pick(runs)
    assert kept == ["a", "c"]
    assert notes == ["b repeats a (seed 1, identical curve): counted once"]


def test_different_runs_with_one_seed_are_refused_or_newest_kept() -> None:
    runs: list[Run] = [("new", "1", [0.1, 0.2]), ("old", "1", [0.5, 0.2]), ("x", "2", [0, 0])]
    with pytest.raises(DuplicateSeeds, match=r"new and old both have seed 1.*--duplicates newest"):
        _pick(runs)
    kept, notes = _pick(runs, "newest")
    assert kept == ["new", "x"] and "kept the newer" in notes[0]
    with pytest.raises(ValueError, match="refuse' or 'newest"):
        _pick(runs, "oldest")


def test_runs_without_a_seed_are_each_their_own() -> None:
    kept, notes = _pick([("a", None, [1.0]), ("b", None, [1.0])])
    assert kept == ["a", "b"] and notes == []


def test_compare_url_is_mlflow_317_route() -> None:
    url = compare_runs_url("http://user:pw@10.0.0.5:5000/", ["2", "1", "2"], ["r1", "r2", "r1"])
    assert url.startswith("http://10.0.0.5:5000/#/compare-runs?runs=")
    assert "user" not in url and "pw" not in url
    query = unquote(url.split("?", 1)[1])
    runs, experiments = (part.split("=", 1)[1] for part in query.split("&"))
    assert json.loads(runs) == ["r1", "r2"] and json.loads(experiments) == ["1", "2"]
    assert ui_base("sqlite:////tmp/mlflow.db") == "http://127.0.0.1:5000"
    assert ui_base("https://mlflow.example.org/base/") == "https://mlflow.example.org/base"


def test_mlflow_keys_put_the_main_success_rate_first() -> None:
    keys = mlflow_metric_keys(
        {"success_rate": 0.5, "success_rate/GoToLocal": 0.4, "health/llm/rel_update": 1.0, "lr": 1}
    )
    assert keys == {
        MAIN_SUCCESS_KEY: 0.5,
        "success_rate_by_task/GoToLocal": 0.4,
        "health/llm/rel_update": 1.0,
        "lr": 1,
    }
    assert DEFAULT_METRIC == MAIN_SUCCESS_KEY
    # MLflow 3.17's chart view: named sections (prefix before the last '/') in JS sort order,
    # then "Model metrics" (no prefix). The main section must sort before every other one.
    sections = sorted({k.rsplit("/", 1)[0] for k in keys if "/" in k})
    assert sections[0] == MAIN_SUCCESS_KEY.rsplit("/", 1)[0]
    assert sorted([*sections, "health/x", "time", "eval"])[0] == "Main"
