"""`glamhpc logs JOB --follow` of a 2-node job on the local Slurm cluster shows rank 0's progress
lines while the job trains (issue 14: it printed nothing for ~100 s), and `glamhpc jobs` shows
the run's progress from its directory."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.launch import plan_run, submit_run
from glamhpc.launch.logs import LogTarget, follow_logs
from glamhpc.rundir import RunDir
from tests.slurm.conftest import slurm_cluster, state_dir, tiny_config  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster", "state_dir")]
LINE = re.compile(r"^\[rank0\]:update (\d)/4 frames \d+/\d+ success \S+ return \S+ steps/s \d+ ")


class Recorder:
    """A stdout noting, for each progress line, whether the run had finished when it came."""

    def __init__(self, run_dir: Path) -> None:
        self.run = RunDir(run_dir)
        self.updates: list[tuple[str, bool]] = []
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        for line in text.splitlines():
            match = LINE.match(line)
            if match:
                self.updates.append((match.group(1), self.run.is_done()))
        return len(text)

    def flush(self) -> None:
        pass


def test_follow_a_two_node_job_shows_progress_as_it_trains(
    tmp_path: Path, _sqlite_template: Path
) -> None:
    shutil.copy(_sqlite_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(tmp_path, uri, "train.max_updates=4", nodes=2)
    submitted = submit_run(plan_run(cfg, "watched", workdir=tmp_path))
    out = Recorder(submitted.plan.run_dir)
    target = LogTarget(submitted.job_id, submitted.plan.folder, "slurm")
    state = follow_logs(target, out, poll_s=0.5, timeout_s=420)
    assert state == "COMPLETED", out.text[-3000:]
    assert [update for update, _ in out.updates] == ["1", "2", "3", "4"], out.text[-3000:]
    assert out.updates[0][1] is False  # the first line came while the job was training
    result = CliRunner().invoke(app, ["jobs"], env={"COLUMNS": "200"})
    row = next(ln for ln in result.output.splitlines() if ln.split()[:1] == [submitted.job_id])
    assert "4/4 upd" in row and re.search(r"\d\d:\d\d:\d\d", row), row
