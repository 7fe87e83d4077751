"""Shared by the input-hardening tests: a CLI call that must stop with ONE error line.

Not a test module: helpers for test_names, test_numbers and test_config_files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app

#: The longest error line a user should have to read (the issue: messages cut to ~300 chars).
MAX_LINE = 500


def fails_with_one_line(*args: str) -> str:
    """Run ``glamhpc ARGS`` in-process; assert exit 2, no traceback, exactly one short line."""
    result = CliRunner().invoke(app, list(args))
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {str(result.exception)[:300]}"
    )
    assert result.exit_code == 2, output[:2000]
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output[:2000]
    assert lines[0].startswith("error: ")
    assert len(lines[0]) <= MAX_LINE, lines[0][:1000]
    return lines[0]


def tree(root: Path) -> set[str]:
    """Every path below ``root`` (links not followed): what a command wrote shows up here."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder three levels below tmp_path (so ``../../..`` still lands in tmp_path,
    where the test can see it); state, MLflow and the hub cache kept inside tmp_path."""
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("GLAMHPC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return work
