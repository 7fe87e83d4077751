"""Live progress: one line per update on a non-terminal stdout, and logs/progress.json.

The end-to-end test runs `glamhpc train` as a real subprocess (stdout is a pipe, as in every
Slurm or torchrun job) on the real tiny T5 and envs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from glamhpc.rl.progress import Progress, duration, read_progress

LINE = re.compile(
    r"^update (\d+)/(\d+) frames (\d+)/(\d+) success (-|\d\.\d\d) return (-|-?\d+\.\d\d) "
    r"steps/s \d+ ETA (\d+s|\d+m\d\ds|\d+h\d\dm)$"
)


def test_line_and_cell_formats() -> None:
    p = Progress(12, 80, 6144, 40960, 0.42, 0.3149, 140.4, 252.2, "2026-11-28T21:00:00Z")
    assert p.line() == (
        "update 12/80 frames 6144/40960 success 0.42 return 0.31 steps/s 140 ETA 4m12s"
    )
    assert LINE.match(p.line())
    blank = Progress(1, 2, 24, 48, None, None, 3.0, 0.0, "t")
    assert "success - return - " in blank.line() and blank.line().endswith("ETA 0s")
    assert p.cell() == "12/80 upd, 6144 fr, succ 0.42"
    assert [duration(s) for s in (0, 59.6, 61, 3599, 3600 * 3 + 300)] == [
        "0s",
        "1m00s",
        "1m01s",
        "59m59s",
        "3h05m",
    ]


def test_unreadable_progress_file_is_none(tmp_path: Path) -> None:
    assert read_progress(tmp_path) is None
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "progress.json").write_text('{"update": 1')
    assert read_progress(tmp_path) is None
    good = {
        "update": 1,
        "updates": 2,
        "frames": 24,
        "total_frames": 48,
        "success_rate": None,
        "return_mean": 0.5,
        "steps_per_s": 3,
        "eta_s": 1.5,
        "time": "t",
    }
    (tmp_path / "logs" / "progress.json").write_text(json.dumps(good))
    assert read_progress(tmp_path) == Progress(1, 2, 24, 48, None, 0.5, 3.0, 1.5, "t")
    for key, bad in (("success_rate", "x"), ("update", "1"), ("frames", 2.5), ("time", 0)):
        (tmp_path / "logs" / "progress.json").write_text(json.dumps({**good, key: bad}))
        assert read_progress(tmp_path) is None, key


def test_train_prints_one_line_per_update_and_writes_progress_json(tmp_path: Path) -> None:
    overrides = [
        "env.level=BabyAI-GoToRedBallNoDists-v0",
        "env.num_envs=4",
        "ppo.steps_per_env=6",
        "ppo.minibatch_size=8",
        "ppo.epochs=1",
        "ppo.total_frames=240",  # 10 updates planned, 2 made
        "train.max_updates=2",
        "model.device=cpu",
        "tracking.enabled=false",
        "name=progress",
        f"train.run_root={tmp_path / 'runs'}",
    ]
    # train.progress stays true (the default): stdout is a pipe, as in a job, so lines it is.
    argv = [sys.executable, "-m", "glamhpc", "train", "--run-name", "p1"]
    for item in overrides:
        argv += ["--set", item]
    out = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("update ")]
    assert len(lines) == 2, out.stdout
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [m.group(1, 2, 3, 4) for m in matches if m] == [
        ("1", "2", "24", "48"),
        ("2", "2", "48", "48"),
    ]
    assert "frames ━" not in out.stdout  # no rich bar in a pipe
    run_dir = tmp_path / "runs" / "progress" / "p1"
    progress = read_progress(run_dir)
    assert progress is not None, list(run_dir.rglob("*"))
    assert (progress.update, progress.updates, progress.frames) == (2, 2, 48)
    assert progress.eta_s == 0.0 and progress.steps_per_s > 0
    saved = json.loads((run_dir / "logs" / "progress.json").read_text())
    assert saved["total_frames"] == 48 and saved["time"].endswith("Z")
