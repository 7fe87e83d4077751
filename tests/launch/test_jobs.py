"""Job registry and the local job table (files only, no Slurm); logs: tests/launch/test_logs.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from glamhpc.launch import registry
from glamhpc.launch.jobs import local_rows

pytestmark = pytest.mark.usefixtures("registry_dir")


def test_registry_round_trip_and_lookups(
    tmp_path: Path, job_record: Callable[..., registry.JobRecord]
) -> None:
    assert registry.load() == []
    registry.append(job_record("5", runs=["r"]))
    registry.append(job_record("9", kind="sweep", name="sw", runs=["sw-000", "sw-001"]))
    registry.append(job_record("10", kind="finalize", name="sw"))
    # A torn line (a crash mid-write) does not hide the other records.
    with registry.registry_path().open("a") as fh:
        fh.write('{"job_id": "11", "kind"\n')
    assert [r.job_id for r in registry.load()] == ["5", "9", "10"]
    assert registry.by_job_id("9_1").name == "sw"  # type: ignore[union-attr]
    assert registry.by_job_id("404") is None
    assert [r.kind for r in registry.by_name("sw")] == ["finalize", "sweep"]


def test_local_rows_report_ended_jobs(tmp_path: Path) -> None:
    record = registry.JobRecord(
        job_id="999999999",
        kind="run",
        name="loc",
        executor="local",
        folder=str(tmp_path),
        runs=["loc"],
    )
    registry.append(record)
    rows = local_rows()
    assert [(r.job_id, r.run, r.state, r.nodelist) for r in rows] == [
        ("999999999", "loc", "ENDED", "localhost")
    ]
