"""`glamhpc.report`: curves over seeds, grouping, summary tables, logging to the sweep parent."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from glamhpc.report import build_report, groups_csv, learning_curve_png, list_runs
from glamhpc.tracking import TrackingError


def test_sweep_report_has_one_curve_per_setting_and_is_logged_to_parent(
    sweep_2x2: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    uri, parent, _ = sweep_2x2
    result = build_report(parent, uri, out_dir=tmp_path / "rep")
    # Default grouping: the swept keys minus the seed -> one curve per learning rate.
    assert result.labels == ["ppo.lr=0.0001  (n=2)", "ppo.lr=0.001  (n=2)"]
    assert result.png.read_bytes()[:4] == b"\x89PNG" and result.png.stat().st_size > 10_000
    assert [(r.group, r.n) for r in result.rows] == [("ppo.lr=0.0001", 2), ("ppo.lr=0.001", 2)]
    slow, fast = result.rows
    assert fast.final_mean > slow.final_mean and fast.best >= fast.final_mean - 0.1
    assert fast.frames == 30 * 1280 and fast.steps_per_s == pytest.approx(415.0)
    table = result.markdown.read_text()
    assert "| ppo.lr=0.001 | 2 |" in table and "learning_curves.png" in table
    assert result.csv.read_text().splitlines()[0].startswith("group,n_seeds,final_mean")
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert logged == {"report/learning_curves.png", "report/summary.md", "report/summary.csv"}


def test_report_by_sweep_name(sweep_2x2: tuple[str, str, list[str]], tmp_path: Path) -> None:
    uri, parent, _ = sweep_2x2
    result = build_report("lr-x-seed", uri, out_dir=tmp_path / "rep", log_to_parent=False)
    assert result.parent_run_id == parent and len(result.labels) == 2


def test_experiment_report_group_by_any_key(
    sweep_2x2: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    uri, _, _ = sweep_2x2
    by_seed = build_report("sweep", uri, group_by="seed", out_dir=tmp_path / "a")
    assert [r.group for r in by_seed.rows] == ["seed=1", "seed=2"]
    both = build_report("sweep", uri, group_by="ppo.lr,seed", out_dir=tmp_path / "b")
    assert len(both.labels) == 4 and all(r.n == 1 for r in both.rows)
    with pytest.raises(TrackingError, match="no run has 'nope'"):
        build_report("sweep", uri, group_by="nope", out_dir=tmp_path / "c")


def test_unknown_experiment_lists_existing_ones(sweep_2x2: tuple[str, str, list[str]]) -> None:
    uri, _, _ = sweep_2x2
    with pytest.raises(TrackingError, match=r"unknown experiment 'swep'.*existing.*sweep"):
        build_report("swep", uri)


def test_runs_listing(sweep_2x2: tuple[str, str, list[str]]) -> None:
    uri, parent, children = sweep_2x2
    _, rows = list_runs("sweep", uri)
    by_id = {r.run_id: r for r in rows}
    assert set(by_id) == {parent, *children}
    child = by_id[children[0]]
    assert child.frames == 30 * 1280 and child.status == "FINISHED"
    assert child.best is not None and child.latest is not None and child.best >= child.latest
    assert child.job_state == "COMPLETED" and child.parent == parent
    assert by_id[parent].job_state.endswith("(sweep)")
    order = [r.run_id for r in rows]  # the parent, then its children, as the UI nests them
    assert order[0] == parent and set(order[1:]) == set(children)


def test_csv_header() -> None:
    assert groups_csv([]) == "group,n_seeds,final_mean,final_std,best,frames,steps_per_s\n"


def test_single_run_learning_curve_png(
    sweep_2x2: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    uri, _, children = sweep_2x2
    png = learning_curve_png(children[0], tmp_path / "one.png", uri)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TrackingError, match="no metric 'nope'"):
        learning_curve_png(children[0], tmp_path / "x.png", uri, metric="nope")
