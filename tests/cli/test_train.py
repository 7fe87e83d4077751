"""`glamhpc train` bad input: one error line, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["missing.yaml"], "config file not found"),
        (["--set", "env.num_env=4"], "did you mean 'env.num_envs'"),
        (
            ["--nproc", "3", "--set", "env.num_envs=4", "--set", "ppo.minibatch_size=8"],
            "does not divide evenly over 3 ranks",
        ),
        (
            ["--set", "model.name=google/flan-t5-nope", "--set", "tracking.enabled=false"],
            "glamhpc models prefetch google/flan-t5-nope",
        ),
        (["--set", "model.dtype=bf16"], "use model.dtype=fp32 with model.precision=bf16-mixed"),
        (
            ["--nproc", "2", "--set", "model.dtype=bf16"],
            "use model.dtype=fp32 with model.precision=bf16-mixed",
        ),
        (["--set", "dist.mixed_precision=bf16"], "use model.precision=bf16-mixed"),
    ],
)
def test_bad_input(tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["train", *args, "--set", f"train.run_root={tmp_path}/runs"])
    assert result.exit_code == 2
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
