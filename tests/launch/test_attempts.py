"""Requeue counting (ours and Slurm's), the attempts file, `jobs`' attempt column, `preempt`'s
refusals (no Slurm needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.launch import registry
from glamhpc.launch.attempts import (
    Attempts,
    attempts_path,
    counted_requeues,
    read_attempts,
    stop_reason,
    write_attempts,
)
from glamhpc.launch.jobs import JobRow, _attempt, iter_table


def test_requeues_slurm_started_are_counted() -> None:
    # Ours alone (local executor, or a first allocation).
    assert counted_requeues(0, {}) == 0
    assert counted_requeues(2, {"SLURM_RESTART_COUNT": "1"}) == 2
    # `scontrol requeue` or a node failure: Slurm counted a restart we never saw.
    assert counted_requeues(0, {"SLURM_RESTART_COUNT": "2"}) == 2
    assert counted_requeues(1, {"SLURM_RESTART_COUNT": "bogus"}) == 1


def test_attempts_file_round_trip_and_garbage(tmp_path: Path) -> None:
    write_attempts(tmp_path, "7_1", Attempts(2, 1, "preempted", 12))
    assert read_attempts(tmp_path, "7_1") == Attempts(2, 1, "preempted", 12)
    assert read_attempts(tmp_path, "8") is None
    attempts_path(tmp_path, "9").write_text("[1, 2]")
    assert read_attempts(tmp_path, "9") is None
    attempts_path(tmp_path, "10").write_text('{"attempt": "x", "requeues": 0}')
    assert read_attempts(tmp_path, "10") is None


def test_stop_reason_tells_time_limit_from_preemption() -> None:
    assert stop_reason("SIGTERM", 3500, 60, 120) == "preempted"
    assert stop_reason("SIGUSR2", 10, 60, 120) == "preempted"  # a rehearsal, early in the job
    assert stop_reason("SIGUSR2", 3400, 60, 120) == "time limit"
    assert stop_reason("SIGUSR2", 3400, None, 120) == "preempted"


def test_jobs_shows_attempt_and_last_reason(
    registry_dir: Path, tmp_path: Path, job_record: Callable[..., registry.JobRecord]
) -> None:
    registry.append(job_record("31", folder=tmp_path))
    records = {r.job_id: r for r in registry.load()}
    assert _attempt("31", records) == ""
    write_attempts(tmp_path, "31", Attempts(3, 2, "node failure"))
    assert _attempt("31", records) == "3 (node failure)"
    row = JobRow("31", "", "run", "r", "r", "RUNNING", "00:01:00", "n1", attempt="3 (x)")
    assert next(iter(iter_table([row])))[-1] == "3 (x)"


def test_preempt_refuses_a_local_job_in_one_line(
    registry_dir: Path, job_record: Callable[..., registry.JobRecord]
) -> None:
    record = job_record("4242", name="loc")
    record.executor = "local"
    registry.append(record)
    result = CliRunner().invoke(app, ["preempt", "loc"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "local executor" in lines[0] and "--executor slurm" in lines[0]


def test_preempt_of_an_unknown_name_is_one_line(registry_dir: Path) -> None:
    result = CliRunner().invoke(app, ["preempt", "no-such-run"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: no job, run or sweep named 'no-such-run' (see `glamhpc jobs`)"
    ]


@pytest.mark.parametrize("count", ["0", "3"])
def test_counted_is_never_below_ours(count: str) -> None:
    assert counted_requeues(3, {"SLURM_RESTART_COUNT": count}) == 3
