"""`glamhpc jobs`: one elapsed-time format, and a progress column read from the run directory.

Slurm's answers are canned (squeue and sacct write elapsed times differently, which is the
point); the progress files are written by the trainer's own writer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.config import load_config
from glamhpc.launch import jobs, registry
from glamhpc.launch.jobs import iter_table, list_jobs, local_rows
from glamhpc.rl.progress import TrainProgress

pytestmark = pytest.mark.usefixtures("registry_dir")


def _write_progress(run_dir: Path, update: int, success: float | None) -> None:
    cfg = load_config(
        None,
        ["env.num_envs=4", "ppo.steps_per_env=8", "ppo.minibatch_size=8", "train.max_updates=10"],
    )
    writer = TrainProgress(cfg, run_dir, None)
    metrics = {"env_steps_per_s": 100.0, "return_mean": 0.5}
    if success is not None:
        metrics["success_rate"] = success
    writer.update(update, update * 32, metrics)


def test_slurm_and_local_rows_share_one_elapsed_format_and_show_progress(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    job_record: Callable[..., registry.JobRecord],
    capsys: pytest.CaptureFixture[str],
) -> None:
    solo, first, second = (tmp_path / name for name in ("solo", "sw-000", "sw-001"))
    registry.append(job_record("41", name="solo", runs=["solo"], run_dirs=[str(solo)]))
    registry.append(
        job_record(
            "42",
            kind="sweep",
            name="sw",
            runs=["sw-000", "sw-001"],
            run_dirs=[str(first), str(second)],
        )
    )
    _write_progress(solo, 3, 0.25)
    _write_progress(first, 7, None)
    capsys.readouterr()
    sacct = (
        "40|glamhpc:old|COMPLETED|1-02:03:04|n1\n"
        "41|glamhpc:solo|RUNNING|00:00:12|n1\n"
        "42_0|glamhpc-sweep:sw|RUNNING|00:12:00|n2\n"
    )
    # squeue's %M drops leading zero fields: "2:05" is two minutes five seconds.
    squeue = "41|glamhpc:solo|RUNNING|2:05|n1|None\n42_1|glamhpc-sweep:sw|PENDING|0:00||Priority\n"
    answers = {"sacct": sacct, "squeue": squeue}
    monkeypatch.setattr(jobs, "_slurm_present", lambda: True)
    monkeypatch.setattr(jobs, "slurm_command", lambda args, timeout_s=30: answers[args[0]])
    rows, _ = list_jobs()
    table = {cells[0]: cells for cells in iter_table(rows)}
    assert [table[j][4] for j in ("40", "41", "42_0", "42_1")] == [
        "1-02:03:04",
        "00:02:05",
        "00:12:00",
        "00:00:00",
    ]
    assert table["41"][6] == "3/10 upd, 96 fr, succ 0.25"
    assert table["42_0"][6] == "7/10 upd, 224 fr, succ -"
    assert table["42_1"][6] == "-"  # pending: no update yet
    assert table["40"][6] == "-"  # not in the registry

    result = CliRunner().invoke(app, ["jobs"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split()
    assert header[:8] == ["job", "index", "run", "state", "elapsed", "nodes", "progress", "attempt"]
    assert "3/10 upd, 96 fr, succ 0.25" in result.output


def test_local_run_row_shows_its_progress(tmp_path: Path) -> None:
    run_dir = tmp_path / "loc"
    registry.append(
        registry.JobRecord(
            job_id="999999998",
            kind="run",
            name="loc",
            executor="local",
            folder=str(tmp_path),
            runs=["loc"],
            run_dirs=[str(run_dir)],
        )
    )
    assert [r.progress for r in local_rows()] == [""]
    _write_progress(run_dir, 10, 1.0)
    assert [r.progress for r in local_rows()] == ["10/10 upd, 320 fr, succ 1.00"]


def test_clock_reads_every_slurm_time_format() -> None:
    from glamhpc.launch.jobs import clock

    assert clock("0:05") == "00:00:05"
    assert clock("12:34") == "00:12:34"
    assert clock("1:02:03") == "01:02:03"
    assert clock("00:00:12") == "00:00:12"
    assert clock("3-00:00:01") == "3-00:00:01"
    assert clock(90061) == "1-01:01:01"
    assert clock("UNLIMITED") == "UNLIMITED" and clock("") == ""
