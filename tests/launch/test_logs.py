"""Log discovery, rank selection and log following (files only, no Slurm)."""

from __future__ import annotations

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
    follow_logs,
    log_files,
    read_logs,
    resolve_log_target,
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
    with pytest.raises(LaunchError, match="pick one"):
        resolve_log_target("9")
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
