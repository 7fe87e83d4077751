"""The report's policy-evolution figures: probe curves from MLflow, averaged over seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from glamhpc.report import build_report
from glamhpc.report.loading import resolve_target
from glamhpc.report.probes import mean_probe_curves, run_probe_curves
from glamhpc.rl.probes import NUM_PROBES, probe_key

ACTIONS = ("turn left", "turn right", "go forward")
FRAMES = 64


def _forward(probe: int, seed: int, update: int) -> float:
    """pi(go forward): rises with the update, differs per probe and seed."""
    return min(0.9, 0.1 * update + 0.02 * probe + 0.05 * seed)


def _probe_metrics(seed: int, update: int) -> dict[str, float]:
    out = {}
    for k in range(NUM_PROBES):
        forward = _forward(k, seed, update)
        out[probe_key(k, "go forward")] = forward
        out[probe_key(k, "turn left")] = (1 - forward) / 2
        out[probe_key(k, "turn right")] = (1 - forward) / 2
    return out


def _sweep(root: Path, uri: str, probes: bool) -> str:
    """A 2 lr x 2 seed sweep logged through the Tracker; probe metrics every other update."""
    from glamhpc.config import load_config, to_dict
    from glamhpc.tracking import Tracker, create_parent_run, finalize_parent, sweep_tags

    parent = create_parent_run("probes", "probe-sweep", uri, {"ppo.lr": [1e-4, 1e-3],
                                                              "seed": [1, 2]})  # fmt: skip
    for lr in (1e-4, 1e-3):
        for seed in (1, 2):
            name = f"lr{lr:g}-seed{seed}"
            config = to_dict(load_config(None, [f"ppo.lr={lr}", f"seed={seed}"]))
            tags = {**sweep_tags({"ppo.lr": lr, "seed": seed}), "sweep.index": name}
            tags |= {f"probe.{k:02d}": f"go to the red ball (after {k % 3} actions)"
                     for k in range(NUM_PROBES)} if probes else {}  # fmt: skip
            with Tracker.start(root / name, config, "probes", uri, name, tags, parent) as tracker:
                for update in range(1, 7):
                    metrics = {"success_rate": 0.1 * update}
                    if probes and update % 2 == 0:
                        metrics |= _probe_metrics(seed, update)
                    tracker.log_metrics(metrics, step=update * FRAMES)
    finalize_parent(parent, "FINISHED", uri)
    return parent


def test_sweep_report_draws_one_probe_figure_per_setting(sqlite_uri: str, tmp_path: Path) -> None:
    parent = _sweep(tmp_path / "runs", sqlite_uri, probes=True)
    client = MlflowClient(sqlite_uri)
    _, runs, _ = resolve_target(client, parent, sqlite_uri)
    seed1 = next(r for r in runs if r.name == "lr0.001-seed1")
    curves = run_probe_curves(client, seed1)
    assert sorted(curves) == list(range(NUM_PROBES))
    assert sorted(curves[3]) == sorted(ACTIONS)
    steps, values = curves[3]["go forward"]
    assert steps == [128, 256, 384] and values == pytest.approx(
        [_forward(3, 1, u) for u in (2, 4, 6)]
    )
    seed2 = next(r for r in runs if r.name == "lr0.001-seed2")
    mean = mean_probe_curves([curves, run_probe_curves(client, seed2)])
    expected = [(_forward(3, 1, u) + _forward(3, 2, u)) / 2 for u in (2, 4, 6)]
    assert mean[3]["go forward"][1] == pytest.approx(expected)

    result = build_report(parent, sqlite_uri, out_dir=tmp_path / "rep")
    assert [p.name for p in result.probe_pngs] == ["probes_ppo.lr_0.0001.png",
                                                   "probes_ppo.lr_0.001.png"]  # fmt: skip
    for png in result.probe_pngs:
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 30_000
    assert "![policy evolution](probes_ppo.lr_0.001.png)" in result.markdown.read_text()
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/probes_ppo.lr_0.0001.png", "report/probes_ppo.lr_0.001.png"} <= logged


def test_runs_without_probes_get_no_probe_figure(sqlite_uri: str, tmp_path: Path) -> None:
    parent = _sweep(tmp_path / "runs", sqlite_uri, probes=False)
    result = build_report(parent, sqlite_uri, out_dir=tmp_path / "rep")
    assert result.probe_pngs == [] and not list((tmp_path / "rep").glob("probes*"))
    assert "policy evolution" not in result.markdown.read_text()
