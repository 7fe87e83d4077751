"""`glamhpc models ...` through Typer's CliRunner (real builds, real hub client, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app

runner = CliRunner()


def test_build_tiny_prints_the_cached_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "build-tiny", "--cache", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.parent == tmp_path and folder.name.startswith("tiny-t5-")
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    info = runner.invoke(app, ["models", "info", "tiny-t5", "--cache", str(tmp_path)])
    assert info.exit_code == 0, info.output
    assert "params: 0.4 M" in info.stdout and f"yes ({folder})" in info.stdout


def test_info_flan_t5_without_files(tmp_path: Path) -> None:
    args = ["models", "info", "google/flan-t5-large", "--cache", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "params: 783.2 M" in result.stdout
    assert "d_model 1024" in result.stdout and "vocab 32128" in result.stdout
    assert "cached locally: no" in result.stdout
    assert "glamhpc models prefetch google/flan-t5-large" in result.stdout


def test_info_unknown_model_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["models", "info", "nobody/nothing", "--cache", str(tmp_path)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error: no config for 'nobody/nothing'" in result.stderr


def _one_line_error(result: object) -> str:
    stderr = result.stderr.strip()  # type: ignore[attr-defined]
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    assert len(stderr.splitlines()) == 1, stderr
    return stderr


def test_prefetch_offline_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _one_line_error(runner.invoke(app, ["models", "prefetch", "google/flan-t5-small"]))
    assert line.startswith("error: cannot prefetch 'google/flan-t5-small'")
    assert "HF_HUB_OFFLINE" in line


def test_prefetch_without_network_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An endpoint nothing listens on: the real hub client fails fast, as without internet.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    args = ["models", "prefetch", "google/flan-t5-small", "--cache", str(tmp_path)]
    line = _one_line_error(runner.invoke(app, args))
    assert line.startswith("error: could not download 'google/flan-t5-small'")
    assert "model.path=" in line
