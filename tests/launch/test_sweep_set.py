"""`glamhpc sweep --set`: train's --set for every element, after the file's `set:`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.launch import load_sweep, plan_sweep
from glamhpc.launch.sweep_file import with_overrides
from tests.security.one_line import fails_with_one_line

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "configs" / "sweeps" / "example-2x2.yaml")


def test_set_applies_to_every_element_after_the_files_set(tmp_path: Path) -> None:
    spec = with_overrides(load_sweep(EXAMPLE), ["train.max_updates=3", "env.num_envs=8"])
    assert spec.overrides[-2:] == ["train.max_updates=3", "env.num_envs=8"]
    plan = plan_sweep(spec, workdir=tmp_path)
    # The file sets max_updates=30; the command line comes after it and wins.
    assert [c.train.max_updates for c in plan.configs] == [3, 3, 3, 3]
    assert {c.env.num_envs for c in plan.configs} == {8}
    assert sorted({c.ppo.lr for c in plan.configs}) == [5.0e-5, 5.0e-4]  # still swept


def test_sweep_cli_takes_set_and_validates_it_like_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLAMHPC_STATE_DIR", str(tmp_path / "state"))
    result = CliRunner().invoke(
        app, ["sweep", EXAMPLE, "--set", "train.max_updates=3", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "example-2x2-003" in result.output
    train_error = fails_with_one_line("train", "--set", "ppo.bogus=1")
    sweep_error = fails_with_one_line("sweep", EXAMPLE, "--set", "ppo.bogus=1", "--dry-run")
    assert "ppo.bogus" in sweep_error and "ppo.bogus" in train_error
    fails_with_one_line("sweep", EXAMPLE, "--set", "train.max_updates", "--dry-run")
    clash = fails_with_one_line("sweep", EXAMPLE, "--set", "ppo.lr=1e-3", "--dry-run")
    assert "varies ppo.lr" in clash
    assert "varies seed" in fails_with_one_line("sweep", EXAMPLE, "-s", "seed=3", "--dry-run")
