"""The run directory: names, its place inside the run root, its mode, and its training lock."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.config import ConfigError, load_config
from glamhpc.rundir import RunDir, private_dir

TINY = [
    "--set", "tracking.enabled=false", "--set", "train.progress=false",
    "--set", "env.num_envs=2", "--set", "ppo.steps_per_env=2", "--set", "ppo.minibatch_size=4",
]  # fmt: skip


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> object:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_run_directories_are_private_by_default(tmp_path: Path) -> None:
    cfg = load_config(None, [f"train.run_root={tmp_path / 'runs'}"])
    run = RunDir.of(cfg, "r", tmp_path)
    run.write_launch_snapshot(cfg)
    assert _mode(run.path) == 0o700
    other = RunDir.of(cfg, "r2", tmp_path)
    other.prepare(cfg)
    assert _mode(other.path) == 0o700


@pytest.mark.usefixtures("open_umask")
def test_run_dir_mode_is_configurable_and_octal(tmp_path: Path) -> None:
    cfg = load_config(None, [f"train.run_root={tmp_path}", "train.run_dir_mode=0o750"])
    assert cfg.train.run_dir_mode == 0o750
    run = RunDir.of(cfg, "r", tmp_path)
    run.prepare(cfg)
    assert _mode(run.path) == 0o750
    # The resolved config says it in octal, and reads back the same.
    assert "run_dir_mode: 0o750" in run.config_file.read_text()
    assert load_config(run.config_file).train.run_dir_mode == 0o750
    for bad in ("0o600", "750", "0o1777", "rwx"):
        with pytest.raises(ConfigError, match=r"train\.run_dir_mode"):
            load_config(None, [f"train.run_dir_mode={bad}"])


def test_private_dir_leaves_existing_parents_alone(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir(mode=0o755)
    os.chmod(tmp_path / "shared", 0o755)
    private_dir(tmp_path / "shared" / "run", 0o700)
    assert _mode(tmp_path / "shared") == 0o755
    assert _mode(tmp_path / "shared" / "run") == 0o700


def test_lock_names_its_holder_and_frees_on_release(tmp_path: Path) -> None:
    cfg = load_config(None, [f"train.run_root={tmp_path}"])
    run = RunDir.of(cfg, "r", tmp_path)
    run.prepare(cfg)
    with run.lock(), pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
        RunDir.of(cfg, "r", tmp_path).lock()
    RunDir.of(cfg, "r", tmp_path).lock().release()
    assert run.config_file.is_file()


def test_a_lock_on_a_new_directory_leaves_nothing_when_nothing_was_written(
    tmp_path: Path,
) -> None:
    cfg = load_config(None, [f"train.run_root={tmp_path / 'runs'}"])
    RunDir.of(cfg, "r", tmp_path).lock().release()
    assert not (tmp_path / "runs").exists()


def test_two_trainers_in_one_run_directory_without_tracking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of issue 12: `train --run-name same` twice with tracking off. The second gets
    one line naming the first (a real training process), and nothing of the first is lost."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "runs" / "quickstart" / "same"
    holder = subprocess.Popen(
        [sys.executable, "-m", "glamhpc", "train", *TINY, "--run-name", "same"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (run / "config.yaml").exists():
            assert holder.poll() is None, holder.stderr.read() if holder.stderr else ""
            assert time.monotonic() < deadline, "the first trainer never prepared its run"
            time.sleep(0.2)
        for extra in ([], ["--nproc", "2"]):
            result = CliRunner().invoke(app, ["train", *TINY, "--run-name", "same", *extra])
            assert result.exit_code == 2, result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and f"pid {holder.pid}" in lines[0], result.output
            assert "in use by another training process" in lines[0]
        assert holder.poll() is None
        assert _mode(run) == 0o700
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=120)
    assert (run / "checkpoints").is_dir()


@pytest.mark.parametrize("change", ["agent=bc", "bc.epochs=3", "drrn.hidden=64", "seed=2"])
def test_resume_refuses_another_agent_or_its_settings(tmp_path: Path, change: str) -> None:
    base = [f"train.run_root={tmp_path / 'runs'}"]
    RunDir.of(load_config(None, base), "r", tmp_path).prepare(load_config(None, base))
    run = RunDir.of(load_config(None, base), "r", tmp_path)
    run.check_resume(load_config(None, base))  # the same config resumes
    with pytest.raises(ConfigError, match=f"changed: {change.split('.')[0].split('=')[0]}"):
        run.check_resume(load_config(None, [*base, change]))
