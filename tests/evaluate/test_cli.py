"""`glamhpc eval` through Typer's CliRunner: a finished tiny run evaluated end to end (table,
files, MLflow metrics and artifacts), determinism, split runs, zero-shot, and bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from glamhpc.checkpoint import write_manifest
from glamhpc.cli import app

from .conftest import TrainedRun

runner = CliRunner()


def _eval(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["eval", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_eval_run_end_to_end_table_files_and_mlflow(trained_run: TrainedRun) -> None:
    code, out, err = _eval(
        "--run", trained_run.run_id, "--uri", trained_run.uri,
        "--suite", "goto_local_n4", "--level", "GoToRedBallNoDists",
        "--baseline", "random", "--episodes", "4", "--num-envs", "4",
    )  # fmt: skip
    assert code == 0, err
    for text in ("goto_local_n4", "GoToRedBallNoDists", "95% CI", "random", "tiny"):
        assert text in out
    folder = trained_run.run_dir / "eval" / "goto_local_n4+GoToRedBallNoDists-seed1"
    rows = _rows(folder / "results.csv")
    assert [(r["agent"], r["suite"], r["item"]) for r in rows] == [
        ("tiny", "distractor_transfer", "goto_local_n4"),
        ("tiny", "level", "GoToRedBallNoDists"),
        ("random", "distractor_transfer", "goto_local_n4"),
        ("random", "level", "GoToRedBallNoDists"),
    ]
    assert all(r["episodes"] == "4" for r in rows)
    assert len(_rows(folder / "episodes.csv")) == 16
    assert "| tiny | distractor_transfer | goto_local_n4 |" in (folder / "results.md").read_text()

    client = MlflowClient(trained_run.uri)
    run = client.get_run(trained_run.run_id)
    frames = json.loads((trained_run.run_dir / "model" / "glamhpc.json").read_text())["frames"]
    for row in rows[:2]:
        key = f"eval/{row['suite']}/{row['item']}/success_rate"
        assert run.data.metrics[key] == float(row["success_rate"])
        (point,) = client.get_metric_history(run.info.run_id, key)
        assert point.step == frames  # eval metrics sit at the checkpoint's training frames
    assert "eval/distractor_transfer/goto_local_n4/ci95_high" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, f"eval/{folder.name}")}
    assert f"eval/{folder.name}/results.csv" in artifacts
    # The baseline went to a new run of the `eval` experiment, same metric names.
    experiment = client.get_experiment_by_name("eval")
    (baseline,) = client.search_runs([experiment.experiment_id])
    assert baseline.info.status == "FINISHED"
    assert baseline.data.metrics["eval/level/GoToRedBallNoDists/success_rate"] == float(
        rows[3]["success_rate"]
    )


def test_checkpoint_eval_is_deterministic_and_parts_merge_exactly(
    trained_run: TrainedRun, tmp_path: Path
) -> None:
    common = ["--level", "GoToRedBallNoDists", "--episodes", "4", "--num-envs", "2", "--no-track"]
    run_dir, model_dir = str(trained_run.run_dir), str(trained_run.run_dir / "model")
    tables = []
    for name, source, extra in (
        ("a", run_dir, []),
        ("b", run_dir, []),
        ("c", model_dir, ["--parts", "2"]),
    ):
        code, _, err = _eval("--checkpoint", source, *common, *extra, "--out", str(tmp_path / name))
        assert code == 0, err
        folder = tmp_path / name / "GoToRedBallNoDists-seed1"
        tables.append(((folder / "results.csv").read_text(), (folder / "episodes.csv").read_text()))
    assert tables[0] == tables[1] == tables[2]


def test_zero_shot_model(tmp_path: Path) -> None:
    code, out, err = _eval(
        "--model", "tiny-t5", "--level", "GoToRedBallNoDists", "--episodes", "2",
        "--num-envs", "2", "--greedy", "--no-track", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert "zero-shot:tiny-t5" in out
    assert (tmp_path / "GoToRedBallNoDists-seed1-greedy" / "results.csv").is_file()


@pytest.fixture
def restricted_checkpoint(trained_run: TrainedRun, tmp_path: Path) -> Path:
    """The trained model relabelled as trained on the 3 restricted actions."""
    folder = tmp_path / "restricted"
    shutil.copytree(trained_run.run_dir / "model", folder)
    meta = json.loads((folder / "glamhpc.json").read_text())
    meta.update(action_space="restricted", action_texts=meta["action_texts"][:3])
    (folder / "glamhpc.json").write_text(json.dumps(meta))
    write_manifest(folder)  # relabelled on purpose: the export's manifest follows
    return folder


def test_bad_input_is_one_line_exit_2(
    trained_run: TrainedRun, restricted_checkpoint: Path, tmp_path: Path
) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("name: x\n")
    cheap = ["--episodes", "2", "--num-envs", "2", "--no-track", "--out", str(tmp_path / "o")]
    cases = [
        (["--baseline", "random", "--suite", "nope"], "unknown suite 'nope'"),
        (["--baseline", "random", "--level", "GoToNowhere"], "unknown level 'GoToNowhere'"),
        (["--checkpoint", str(tmp_path / "missing")], "does not exist"),
        (["--checkpoint", str(unfinished)], "has not finished training"),
        (
            ["--checkpoint", str(restricted_checkpoint), "--suite", "no_modification"],
            "trained on the 'restricted' action space (3 candidates) but suite item "
            "'no_modification' uses 'standard' (6 candidates)",
        ),
        (["--run", "0123456789abcdef", "--uri", trained_run.uri], "no MLflow run"),
        (["--model", "tiny-t5", "--checkpoint", str(unfinished)], "give one of --run"),
        ([], "nothing to evaluate"),
        (["--baseline", "robot"], "unknown baseline 'robot'"),
        (["--baseline", "random", "--level", "GoToLocal", "--seed", "0"], "seed must be >= 1"),
        (["--baseline", "random", "--level", "GoToLocal", "--parts", "3"], "--parts 3"),
        (["--model", "google/flan-t5-xl", "--level", "GoToLocal"], "is not available"),
        (["--baseline", "random", "--level", "GoToLocal", "--executor", "pbs"], "--executor"),
        (["--model", "tiny-t5", "--level", "GoToLocal", "--device", "gpu"], "--device 'gpu'"),
    ]
    for args, message in cases:
        code, _, err = _eval(*args, *cheap)
        assert code == 2, (args, err)
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert message in lines[0], (args, lines[0])


def test_slurm_executor_without_sbatch_is_a_one_line_error(tmp_path: Path) -> None:
    code, _, err = _eval(
        "--baseline", "random", "--level", "GoToLocal", "--episodes", "2", "--num-envs", "2",
        "--executor", "slurm", "--no-track", "--out", str(tmp_path),
        env={"PATH": str(tmp_path)},
    )  # fmt: skip
    assert code == 2 and "sbatch is not on PATH" in err and len(err.strip().splitlines()) == 1


def test_torchrun_ranks_split_and_merge_like_one_process(tmp_path: Path) -> None:
    args = ["eval", "--baseline", "random", "--suite", "other_nouns", "--level", "GoToLocal"]
    args += ["--episodes", "6", "--num-envs", "4", "--no-track"]
    code, _, err = _eval(*args[1:], "--out", str(tmp_path / "one"))
    assert code == 0, err
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "glamhpc", *args,
         "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("glamhpc eval (") == 1  # only rank 0 reports
    tag = "other_nouns+GoToLocal-seed1"
    for name in ("results.csv", "episodes.csv"):
        assert (tmp_path / "two" / tag / name).read_text() == (
            tmp_path / "one" / tag / name
        ).read_text()


def test_run_whose_dir_is_elsewhere_uses_the_model_artifact(
    trained_run: TrainedRun, tmp_path: Path
) -> None:
    from glamhpc.evaluate.agents import run_spec

    hidden = trained_run.run_dir.with_name("elsewhere")
    trained_run.run_dir.rename(hidden)  # the run dir lives on another machine
    try:
        spec = run_spec(trained_run.run_id, trained_run.uri, tmp_path)
    finally:
        hidden.rename(trained_run.run_dir)
    assert spec.model == str(tmp_path / trained_run.run_id / "model")
    assert (spec.label, spec.run_id, spec.run_dir) == ("tiny", trained_run.run_id, None)
    assert spec.trained_action_space == "standard" and spec.history == 1


def test_arguments_are_checked_before_any_file_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad arguments create no mlflow.db in the working folder; an unwritable --out is refused
    before the evaluation runs (it used to fail after it, with a traceback)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        (["--baseline", "random", "--suite", "nope"], "unknown suite 'nope'"),
        (["--run", "0123456789abcdef"], "no MLflow tracking store"),
        (["--baseline", "random", "--level", "GoToLocal", "--out", str(blocker / "o")], "a-file"),
        (["--baseline", "random", "--level", "GoToLocal", "--out", str(blocker)], "not a folder"),
    ]
    for args, message in cases:
        code, _, err = _eval(*args, "--episodes", "2", "--num-envs", "2")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"], args
