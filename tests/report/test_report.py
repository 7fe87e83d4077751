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
    uri, parent, _children = sweep_2x2
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
    assert result.csv.read_text().splitlines()[0].startswith("group,n_seeds,seeds,final_mean")
    assert result.csv.read_text().splitlines()[2].startswith("ppo.lr=0.001,2,1 2,")
    assert result.compare_url and "/#/compare-runs?runs=" in result.compare_url
    assert all(child in result.compare_url for child in _children)
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
    assert groups_csv([]) == (
        "group,n_seeds,seeds,final_mean,final_low,final_high,band,best,frames,steps_per_s\n"
    )


def test_default_folder_is_the_sweep_name_and_ci95_is_deterministic(
    sweep_2x2: tuple[str, str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, parent, _ = sweep_2x2
    monkeypatch.chdir(tmp_path)
    first = build_report(parent, uri, band_kind="ci95", smooth=3, log_to_parent=False)
    assert first.png == Path("reports/lr-x-seed/learning_curves.png")
    again = build_report("lr-x-seed", uri, band_kind="ci95", smooth=3, log_to_parent=False)
    assert [(r.final_low, r.final_high) for r in first.rows] == [
        (r.final_low, r.final_high) for r in again.rows
    ]
    for row in first.rows:
        assert row.band == "ci95" and row.final_low <= row.final_mean <= row.final_high
    assert "95% CI" in first.markdown.read_text()
    by_exp = build_report("sweep", uri, log_to_parent=False)
    assert by_exp.png == Path("reports/sweep/learning_curves.png")
    with pytest.raises(TrackingError, match="--band must be one of std, ci95, minmax"):
        build_report(parent, uri, band_kind="sem")


def test_experiment_report_counts_distinct_seeds(sqlite_uri: str, tmp_path: Path) -> None:
    """The issue's case: three runs with seed 1 (two identical) and one with seed 2 gave n=4."""
    client = MlflowClient(sqlite_uri)
    exp = client.create_experiment("dups")

    def run(name: str, seed: int, values: list[float], steps_per_s: float) -> str:
        # Distinct start times: "newest" is decided by them.
        r = client.create_run(exp, run_name=name, start_time=1_000_000 + 1000 * ord(name))
        client.log_param(r.info.run_id, "seed", seed)
        client.log_param(r.info.run_id, "ppo.lr", 0.001)
        for i, v in enumerate(values, 1):
            client.log_metric(r.info.run_id, "Main/success_rate", v, step=i * 100)
            client.log_metric(r.info.run_id, "env_steps_per_s", steps_per_s * i, step=i * 100)
        client.set_terminated(r.info.run_id)
        return r.info.run_id

    run("a", 1, [0.1, 0.2, 0.3], 10.0)
    run("b", 1, [0.1, 0.2, 0.3], 10.0)
    run("c", 2, [0.3, 0.4, 0.5], 20.0)
    result = build_report("dups", sqlite_uri, "ppo.lr", tmp_path / "r")
    (row,) = result.rows
    assert row.n == 2 and row.seeds == ["1", "2"]
    assert row.final_mean == pytest.approx(0.4) and row.frames == 300
    assert row.steps_per_s == pytest.approx(30.0)  # mean over seeds of each run's mean (20, 40)
    assert len(result.notes) == 1 and "counted once" in result.notes[0]
    run("d", 2, [0.9, 0.9, 0.9], 20.0)  # a different run with seed 2
    with pytest.raises(TrackingError, match="both have seed 2 but different curves"):
        build_report("dups", sqlite_uri, "ppo.lr", tmp_path / "r")
    newest = build_report("dups", sqlite_uri, "ppo.lr", tmp_path / "r", duplicates="newest")
    assert newest.rows[0].n == 2 and newest.rows[0].final_mean == pytest.approx(0.6)


def test_single_run_learning_curve_png(
    sweep_2x2: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    uri, _, children = sweep_2x2
    png = learning_curve_png(children[0], tmp_path / "one.png", uri)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TrackingError, match="no metric 'nope'"):
        learning_curve_png(children[0], tmp_path / "x.png", uri, metric="nope")


def test_sweep_in_its_own_experiment_reports_as_the_sweep(sqlite_uri: str, tmp_path: Path) -> None:
    """`report NAME` when NAME is both a sweep and its experiment (the default layout): the sweep,
    so the files land in reports/NAME/ and on the parent run."""
    from glamhpc.tracking import create_parent_run, finalize_parent, sweep_tags

    parent = create_parent_run("same", "same", sqlite_uri)
    client = MlflowClient(sqlite_uri)
    exp = client.get_experiment_by_name("same")
    assert exp is not None
    for lr, seed in ((1, 1), (1, 2), (2, 1)):
        tags = {**sweep_tags({"ppo.lr": lr, "seed": seed}), "mlflow.parentRunId": parent}
        run = client.create_run(exp.experiment_id, run_name=f"same-{lr}-{seed}", tags=tags)
        client.log_metric(run.info.run_id, "Main/success_rate", 0.1 * lr * seed, step=100)
        client.set_terminated(run.info.run_id)
    finalize_parent(parent, "FINISHED", sqlite_uri)
    result = build_report("same", sqlite_uri, out_dir=tmp_path / "r")
    assert result.parent_run_id == parent
    assert [(r.group, r.n) for r in result.rows] == [("ppo.lr=1", 2), ("ppo.lr=2", 1)]
    assert {a.path for a in client.list_artifacts(parent, "report")} >= {"report/summary.md"}


def test_cli_report_prints_table_link_and_refuses_a_bad_band(
    sweep_2x2: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from glamhpc.cli import app

    uri, _, children = sweep_2x2
    args = ["report", "lr-x-seed", "--uri", uri, "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [*args, "--band", "ci95", "--smooth", "2"])
    assert result.exit_code == 0, result.output
    assert "final success rate (mean [95% CI])" in result.output
    assert "compare in MLflow: http://127.0.0.1:5000/#/compare-runs?runs=" in result.output
    assert all(c in result.output for c in children)
    bad = CliRunner().invoke(app, [*args, "--band", "sem"])
    assert bad.exit_code == 2 and "--band must be one of std, ci95, minmax" in bad.output
    assert "Traceback" not in bad.output
