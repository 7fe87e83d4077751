"""Log discovery, rank selection and log following (files only, no Slurm)."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from glamhpc.launch import registry
from glamhpc.launch.executors import LaunchError
from glamhpc.launch.logs import (
    LogTarget,
    follow_all,
    follow_logs,
    log_files,
    read_all,
    read_logs,
    resolve_log_target,
    resolve_log_targets,
    select_rank,
)

pytestmark = pytest.mark.usefixtures("registry_dir")


def test_select_rank_strips_the_prefix() -> None:
    lines = ["agent line\n", "[rank0]:zero\n", "[rank1]:one\n", "[rank10]:ten\n"]
    assert select_rank(lines, None) == lines
    assert select_rank(lines, 1) == ["one\n"]
    assert select_rank(lines, 10) == ["ten\n"]
    assert select_rank(lines, 2) == []


def _node_logs(folder: Path, job: str, nodes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for node in range(nodes):
        (folder / f"{job}_{node}_log.out").write_text(
            f"[glamhpc launch] node {node + 1}/{nodes}\n[rank{node}]:hello from {node}\n"
        )
    (folder / f"{job}_submitted.pkl").write_bytes(b"")
    (folder / f"{job}9_0_log.out").write_text("another job's log\n")


def test_log_files_in_node_order_and_rank_filter(tmp_path: Path) -> None:
    folder = tmp_path / "launch"
    _node_logs(folder, "12", 3)
    target = LogTarget("12", folder, "slurm")
    assert [p.name for p in log_files(target)] == [f"12_{n}_log.out" for n in range(3)]
    everything = read_logs(target)
    assert "==> node 2" in everything and "another job" not in everything
    assert read_logs(target, rank=2) == "hello from 2\n"
    with pytest.raises(LaunchError, match="no log yet"):
        read_logs(LogTarget("13", folder, "slurm"))


def test_log_target_from_run_name_and_array_element(
    tmp_path: Path, job_record: Callable[..., registry.JobRecord]
) -> None:
    registry.append(job_record("5", name="solo", folder=tmp_path / "a"))
    registry.append(
        job_record("9", kind="sweep", name="sw", runs=["sw-000", "sw-001"], folder=tmp_path / "s")
    )
    assert resolve_log_target("solo") == LogTarget("5", tmp_path / "a", "slurm")
    assert resolve_log_target("sw-001") == LogTarget("9_1", tmp_path / "s", "slurm")
    assert resolve_log_target("9_0").job_id == "9_0"
    with pytest.raises(LaunchError, match="no job or run named"):
        resolve_log_target("nothing-here")


def test_follow_prints_growth_and_stops_when_the_job_ends(tmp_path: Path) -> None:
    folder = tmp_path / "launch"
    folder.mkdir()
    log = folder / "7_0_log.out"
    log.write_text("[rank0]:first\n")
    state = {"now": "RUNNING"}

    def writer() -> None:
        time.sleep(0.3)
        with log.open("a") as fh:
            fh.write("[rank0]:sec")  # a partial line is held back until it is complete
            fh.flush()
            time.sleep(0.3)
            fh.write("ond\n[rank1]:other rank\n")
        state["now"] = "COMPLETED"

    thread = threading.Thread(target=writer)
    thread.start()
    out = io.StringIO()
    final = follow_logs(
        LogTarget("7", folder, "slurm"),
        out,
        rank=0,
        poll_s=0.05,
        state=lambda _job: state["now"],
        timeout_s=20,
    )
    thread.join()
    assert final == "COMPLETED"
    assert out.getvalue() == "first\nsecond\n"


def test_a_slurm_sweep_reads_as_all_its_elements_labelled(
    tmp_path: Path, job_record: Callable[..., registry.JobRecord]
) -> None:
    folder = tmp_path / "s"
    registry.append(
        job_record("9", kind="sweep", name="sw", runs=["sw-000", "sw-001", "sw-002"], folder=folder)
    )
    folder.mkdir()
    (folder / "9_0_0_log.out").write_text("[rank0]:update 1/2 a\n[rank1]:other\n")
    (folder / "9_1_0_log.out").write_text("[rank0]:update 1/2 b\n")
    by_id, by_name = resolve_log_targets("9"), resolve_log_targets("sw")
    assert (
        by_id
        == by_name
        == [
            LogTarget("9_0", folder, "slurm", "sw-000"),
            LogTarget("9_1", folder, "slurm", "sw-001"),
            LogTarget("9_2", folder, "slurm", "sw-002"),
        ]
    )
    assert read_all(by_id, rank=0) == (
        "[sw-000] update 1/2 a\n[sw-001] update 1/2 b\n[sw-002] (no log yet: job 9_2 pending?)\n"
    )
    # One element, or a single run, reads as before: no label.
    assert resolve_log_targets("sw-001") == [LogTarget("9_1", folder, "slurm")]
    assert read_all(resolve_log_targets("9_0")) == "[rank0]:update 1/2 a\n[rank1]:other\n"

    states = {"9_0": "COMPLETED", "9_1": "RUNNING", "9_2": "PENDING"}

    def writer() -> None:
        time.sleep(0.3)
        (folder / "9_2_0_log.out").write_text("[rank0]:update 1/2 c\n")
        states.update({"9_1": "COMPLETED", "9_2": "COMPLETED"})

    thread = threading.Thread(target=writer)
    thread.start()
    out = io.StringIO()
    finals = follow_all(
        lambda: resolve_log_targets("sw"), out, rank=0, poll_s=0.05, state=states.get
    )
    thread.join()
    assert finals == {"9_0": "COMPLETED", "9_1": "COMPLETED", "9_2": "COMPLETED"}
    assert out.getvalue().splitlines() == [
        "[sw-000] update 1/2 a",
        "[sw-001] update 1/2 b",
        "[sw-002] update 1/2 c",
    ]


def test_a_local_sweep_reads_its_driver_and_the_elements_started_so_far(
    tmp_path: Path, job_record: Callable[..., registry.JobRecord]
) -> None:
    def local(job_id: str, kind: str, name: str, folder: Path, **kw: object) -> registry.JobRecord:
        return dataclasses.replace(
            job_record(job_id, kind=kind, name=name, folder=folder, **kw), executor="local"
        )

    # An element of an older sweep of the same name is not this sweep's.
    registry.append(local("50", "element", "lsw-000", tmp_path, submitted="2000-01-01T00:00:00"))
    registry.append(local("60", "sweep", "lsw", tmp_path / "driver", runs=["lsw-000", "lsw-001"]))
    assert resolve_log_targets("lsw") == [
        LogTarget("60", tmp_path / "driver", "local", "lsw driver")
    ]
    registry.append(local("61", "element", "lsw-000", tmp_path))
    assert [t.label for t in resolve_log_targets("60")] == ["lsw driver", "lsw-000"]
    assert resolve_log_targets("lsw")[1] == LogTarget("61", tmp_path, "local", "lsw-000")
