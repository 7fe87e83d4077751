"""Files in a run directory are data, never code: `glamhpc jobs` unpickles nothing from it.

A local job's outcome comes from the small JSON result our own job code writes next to
submitit's files (`glamhpc.launch.job_result`); a pickle planted where submitit would put its
result must not run. The jobs here are real submitit local jobs (real controller processes).
"""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import pytest

from glamhpc.launch import registry
from glamhpc.launch.jobs import local_rows, local_state

pytestmark = pytest.mark.usefixtures("registry_dir")


@pytest.fixture
def registry_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GLAMHPC_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


class _Payload:
    """Unpickling this creates ``marker``: the proof that a planted file ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def _local_record(job_id: str, folder: Path) -> registry.JobRecord:
    record = registry.JobRecord(
        job_id=job_id, kind="run", name="planted", executor="local", folder=str(folder)
    )
    registry.append(record)
    return record


def test_planted_result_pickle_does_not_run(tmp_path: Path) -> None:
    launch = tmp_path / "launch"
    launch.mkdir()
    marker = tmp_path / "pwned"
    job_id = "999999991"  # no such process: the job has ended
    (launch / f"{job_id}_0_result.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    _local_record(job_id, launch)
    rows = local_rows()
    assert not marker.exists(), "`glamhpc jobs` unpickled a file from the run directory"
    assert [r.state for r in rows] == ["ENDED"]


@pytest.mark.parametrize(
    ("content", "state"),
    [
        ({"state": "COMPLETED", "exit": 0, "message": "done"}, "COMPLETED"),
        ({"state": "FAILED", "exit": 1, "message": "torchrun exited with code 1"}, "FAILED"),
        ({"state": "CANCELLED", "exit": 130, "message": "cancelled"}, "CANCELLED"),
        ({"state": "rm -rf /", "exit": 0}, "ENDED"),  # not a state we write
        (["COMPLETED"], "ENDED"),  # not an object
        ("{truncated", "ENDED"),  # not JSON at all
    ],
)
def test_json_result_is_the_only_source(tmp_path: Path, content: object, state: str) -> None:
    job_id = "999999992"
    text = content if isinstance(content, str) else json.dumps(content)
    (tmp_path / f"{job_id}_0_result.json").write_text(text)
    record = _local_record(job_id, tmp_path)
    assert local_state(record) == state


def _wait_ended(job: object, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not job.done():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "local job did not end"
        time.sleep(0.2)


def _submit(tmp_path: Path, spec_dir: Path, log_dir: Path) -> tuple[str, Path]:
    """A real local TorchrunJob (submitit controller process) for a run at ``spec_dir``."""
    from glamhpc.config import load_config
    from glamhpc.launch.executors import make_executor
    from glamhpc.launch.resources import job_name, resolve
    from glamhpc.launch.torchrun import RunSpec, TorchrunJob

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs" / "quickstart.yaml", ["launch.executor=local"])
    res = resolve(cfg)
    folder = tmp_path / "launch"
    executor = make_executor(res, folder, job_name("run", "trust"))
    spec = RunSpec(
        config_path=str(repo / "configs" / "quickstart.yaml"),
        run_name="trust",
        run_dir=str(spec_dir),
        workdir=str(tmp_path),
        log_dir=str(log_dir),
    )
    job = executor.submit(TorchrunJob(res), spec)
    _wait_ended(job)
    return str(job.job_id), folder


def test_real_local_jobs_write_a_json_result(tmp_path: Path) -> None:
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "DONE").write_text("0\n")  # nothing to train: the job ends at once, COMPLETED
    job_id, folder = _submit(tmp_path, finished, tmp_path / "logs")
    result = json.loads((folder / f"{job_id}_0_result.json").read_text())
    assert result["state"] == "COMPLETED" and result["exit"] == 0
    assert local_state(_local_record(job_id, folder)) == "COMPLETED"

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the job cannot create its log folder under a file: it fails
    job_id, folder = _submit(tmp_path, tmp_path / "unfinished", blocker / "logs")
    result = json.loads((folder / f"{job_id}_0_result.json").read_text())
    assert result["state"] == "FAILED" and result["exit"] == 1
    assert "not-a-folder" in result["message"] and "\n" not in result["message"]
    assert local_state(_local_record(job_id, folder)) == "FAILED"


def test_eval_array_parts_are_read_from_json_only(tmp_path: Path) -> None:
    """`eval --executor slurm` reads each task's episodes from JSON, not submitit's pickle."""
    from glamhpc.evaluate.agents import EvalError
    from glamhpc.evaluate.episodes import Episode
    from glamhpc.evaluate.runner import part_file, read_part_file

    marker = tmp_path / "pwned"
    (tmp_path / "7_0_result.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(EvalError, match="task 7_0 failed"):
        read_part_file(tmp_path, "7_0", grace_s=0)
    assert not marker.exists()

    episode = Episode(stream=0, number=1, success=True, return_=0.5, length=9, task_kind="goto")
    good = {"stream": 0, "number": 1, "success": True, "return_": 0.5, "length": 9}
    part_file(tmp_path, "7_1").write_text(json.dumps({"item": [{**good, "task_kind": "goto"}]}))
    assert read_part_file(tmp_path, "7_1", grace_s=0) == {"item": [episode]}
    for bad in (
        "[]",
        '{"item": [{"stream": 0}]}',
        '{"item": [' + json.dumps({**good, "task_kind": {"__reduce__": "os.system"}}) + "]}",
        "{not json",
    ):
        part_file(tmp_path, "7_2").write_text(bad)
        with pytest.raises(EvalError):
            read_part_file(tmp_path, "7_2", grace_s=0)
