"""Evaluation arrays: their resources, their registry record, and `jobs` / `logs` / `cancel` on
them, with submitit's executor and the Slurm clients replaced by fakes (no cluster needed; the
real array is tests/evaluate/test_slurm.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from glamhpc.config import ConfigError
from glamhpc.launch import cancel as cancel_module
from glamhpc.launch import eval_array, jobs, registry
from glamhpc.launch.cancel import cancel
from glamhpc.launch.eval_array import EvalArrayOptions, eval_resources, submit_eval_array
from glamhpc.launch.executors import LaunchError
from glamhpc.launch.jobs import iter_table, list_jobs
from glamhpc.launch.logs import LogTarget, resolve_log_target
from glamhpc.launch.resources import Resources

pytestmark = pytest.mark.usefixtures("registry_dir")


@dataclass
class FakeJob:
    job_id: str
    value: Any

    def result(self) -> Any:
        return self.value


@dataclass
class FakeExecutor:
    """Stands in for submitit's SlurmExecutor: runs each task at submission, ids ``42_<i>``."""

    made: list[tuple[Resources, Path, str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, res: Resources, folder: Path, name: str, **extra: Any) -> FakeExecutor:
        self.made.append((res, folder, name, extra))
        return self

    def map_array(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> list[FakeJob]:
        return [FakeJob(f"42_{i}", fn(task)) for i, task in enumerate(tasks)]


def test_resources_come_from_the_eval_options_alone() -> None:
    res = eval_resources(EvalArrayOptions(Path("f"), partition="p", time="30", gpus_per_node=3))
    assert (res.executor, res.nodes, res.gpus_per_node, res.cpus_per_task) == ("slurm", 1, 3, 3)
    assert (res.time_min, res.partition, res.signal_delay_s, res.max_requeues) == (30, "p", 120, 3)
    assert eval_resources(EvalArrayOptions(Path("f"), cpus_per_task=4)).cpus_per_task == 4
    assert eval_resources(EvalArrayOptions(Path("f"))).time_min is None
    with pytest.raises(ConfigError, match="bad time limit"):
        eval_resources(EvalArrayOptions(Path("f"), time="soon"))
    with pytest.raises(ConfigError, match="not longer than the 120 s warning"):
        eval_resources(EvalArrayOptions(Path("f"), time="2"))


def test_an_eval_array_is_recorded_listed_logged_and_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExecutor()
    monkeypatch.setattr(eval_array, "make_executor", fake)
    folder = tmp_path / "out" / "slurm"
    array = submit_eval_array(lambda n: n * 10, [1, 2], "random", EvalArrayOptions(folder))
    assert array.job_id == "42" and [j.result() for j in array.jobs] == [10, 20]
    ((res, used_folder, name, extra),) = fake.made
    assert (name, extra, used_folder, res.executor) == (
        "glamhpc-eval:random",
        {"array_parallelism": 2},
        folder,
        "slurm",
    )
    (record,) = registry.load()
    assert (record.job_id, record.kind, record.name, record.executor) == (
        "42",
        "eval",
        "random",
        "slurm",
    )
    assert record.runs == ["random/part0", "random/part1"] and record.folder == str(folder)

    # `glamhpc jobs`: Slurm's view (faked) joined with the record.
    sacct = (
        "42_0|glamhpc-eval:random|COMPLETED|00:00:09|node1\n"
        "42_1|glamhpc-eval:random|RUNNING|00:00:12|node2\n"
    )
    answers = {"sacct": sacct, "squeue": ""}
    monkeypatch.setattr(jobs, "_slurm_present", lambda: True)
    monkeypatch.setattr(jobs, "slurm_command", lambda args, timeout_s=30: answers[args[0]])
    rows, notes = list_jobs()
    assert notes == []
    assert [(r.job_id, r.kind, r.name, r.run, r.state) for r in rows] == [
        ("42_0", "eval", "random", "random/part0", "COMPLETED"),
        ("42_1", "eval", "random", "random/part1", "RUNNING"),
    ]
    assert list(iter_table(rows))[1] == (
        "42_1",
        "1",
        "random/part1",
        "RUNNING",
        "00:00:12",
        "node2",
        "-",
        "-",
    )

    # `glamhpc logs`: a part by name or element id; the bare array id asks for a part.
    assert resolve_log_target("random/part1") == LogTarget("42_1", folder, "slurm")
    assert resolve_log_target("42_0") == LogTarget("42_0", folder, "slurm")
    with pytest.raises(LaunchError, match=r"evaluation array of random \(2 parts\): pick one"):
        resolve_log_target("42")

    # `glamhpc cancel`: by the agent's label or by job id.
    calls: list[list[str]] = []
    monkeypatch.setattr(
        cancel_module, "slurm_command", lambda args, timeout_s=30: calls.append(args) or ""
    )
    done = cancel("random")
    assert (done.job_ids, done.description, calls) == (["42"], "eval random", [["scancel", "42"]])
    assert cancel("42_1").job_ids == ["42_1"] and calls[-1] == ["scancel", "42_1"]
