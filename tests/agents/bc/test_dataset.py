"""Trajectory datasets: written atomically, validated, deterministic; `glamhpc demos` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.agents.bc.dataset import (
    MANIFEST,
    DatasetError,
    DatasetWriter,
    Manifest,
    check_matches,
    read_rows,
    validate,
)
from glamhpc.cli import app

LEVEL = "BabyAI-GoToRedBallNoDists-v0"
runner = CliRunner()


def _manifest(**changes) -> Manifest:
    base = dict(
        source="bot",
        level=LEVEL,
        seed=1,
        episodes=3,
        kept_episodes=3,
        rows=0,
        action_space="standard",
        history=1,
        language="english",
        fix_grammar=False,
        candidates=["turn left", "turn right", "go forward"],
        only_success=True,
    )
    return Manifest(**{**base, **changes})


def _rows(episode: str, n: int) -> list[dict]:
    return [
        {
            "prompt": f"p{episode}{i}",
            "candidates": ["turn left", "turn right", "go forward"],
            "action": i % 3,
            "action_text": ["turn left", "turn right", "go forward"][i % 3],
            "episode": episode,
            "step": i,
            "success": True,
        }
        for i in range(n)
    ]


def _write(out: Path, rows_per_shard: int = 4) -> Manifest:
    writer = DatasetWriter(out, rows_per_shard=rows_per_shard)
    for episode, n in (("0-0", 3), ("1-0", 5), ("0-1", 2)):
        writer.write_episode(_rows(episode, n))
    return writer.finish(_manifest())


def test_written_dataset_validates_and_reads_back_in_order(tmp_path):
    manifest = _write(tmp_path / "d")
    assert manifest.rows == 10
    assert [s.rows for s in manifest.shards] == [4, 4, 2]
    assert validate(tmp_path / "d") == manifest
    rows = read_rows(tmp_path / "d")
    assert [r["prompt"] for r in rows] == [
        r["prompt"] for e, n in (("0-0", 3), ("1-0", 5), ("0-1", 2)) for r in _rows(e, n)
    ]
    # Nothing but the dataset is left next to it (the temporary folder was renamed).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_an_unfinished_write_is_never_a_dataset(tmp_path):
    writer = DatasetWriter(tmp_path / "d")
    writer.write_episode(_rows("0-0", 3))
    with pytest.raises(DatasetError, match="does not exist"):
        validate(tmp_path / "d")
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / MANIFEST).unlink(), "no manifest.json"),
        (lambda d: (d / MANIFEST).write_text("{"), "unreadable"),
        (lambda d: (d / "shard-00001.jsonl").unlink(), "missing"),
        (lambda d: (d / "shard-00000.jsonl").write_text("{}\n"), "sha256"),
        (
            lambda d: (d / MANIFEST).write_text(
                json.dumps({**json.loads((d / MANIFEST).read_text()), "kind": "other"})
            ),
            "bad manifest",
        ),
    ],
)
def test_a_damaged_dataset_is_refused_in_one_line(tmp_path, damage, message):
    _write(tmp_path / "d")
    damage(tmp_path / "d")
    with pytest.raises(DatasetError, match=message) as info:
        validate(tmp_path / "d")
    assert "\n" not in str(info.value)


def test_writer_refuses_an_existing_folder(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(tmp_path / "d")


def test_check_matches_names_the_setting_that_differs(tmp_path):
    manifest = _write(tmp_path / "d")
    check_matches(manifest, tmp_path / "d", history=1, level=LEVEL)
    with pytest.raises(DatasetError, match="history=1 but the run uses 3"):
        check_matches(manifest, tmp_path / "d", history=3)


def _demos(out: Path, *extra: str):
    args = ["demos", "--agent", "bot", "--level", LEVEL, "--episodes", "6", "--num-envs", "3"]
    return runner.invoke(app, [*args, "--history", "1", "--out", str(out), *extra])


def test_demos_cli_records_the_bot_deterministically(tmp_path):
    first = _demos(tmp_path / "a")
    assert first.exit_code == 0, first.output
    assert "6/6 episodes" in first.output
    assert _demos(tmp_path / "b").exit_code == 0
    other = _demos(tmp_path / "c", "--seed", "2")
    assert other.exit_code == 0
    a, b, c = (validate(tmp_path / x) for x in "abc")
    assert a.shards == b.shards  # same seed: the same bytes
    assert a.shards != c.shards
    rows = read_rows(tmp_path / "a")
    assert len(rows) == a.rows > 6
    assert len({r["episode"] for r in rows}) == 6
    for row in rows:
        assert row["candidates"][row["action"]] == row["action_text"]
        assert row["success"] is True
        assert row["prompt"].startswith("Possible action of the agent:")
    # Steps count up within each episode from 0.
    by_episode: dict[str, list[int]] = {}
    for row in rows:
        by_episode.setdefault(row["episode"], []).append(row["step"])
    assert all(steps == list(range(len(steps))) for steps in by_episode.values())
    assert a.source == "bot" and a.level == LEVEL and a.history == 1 and a.seed == 1


def test_demos_check_gives_one_line_and_exit_2_on_a_bad_dataset(tmp_path):
    missing = runner.invoke(app, ["demos", "--check", str(tmp_path / "none")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
    assert "Traceback" not in missing.output
    assert _demos(tmp_path / "a").exit_code == 0
    ok = runner.invoke(app, ["demos", "--check", str(tmp_path / "a")])
    assert ok.exit_code == 0 and "6/6 episodes" in ok.output
    again = _demos(tmp_path / "a")
    assert again.exit_code == 2 and "already exists" in again.output
