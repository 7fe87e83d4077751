"""Checkpoints: atomic layout, manifest verification, corrupt-latest fallback, pruning."""

from __future__ import annotations

import json

import pytest

from glamhpc.checkpoint import (
    Checkpointer,
    CheckpointError,
    read_global_state,
    read_rank_states,
    verify,
)


def _writer(payload: bytes):
    def write(folder):
        (folder / "model.bin").write_bytes(payload)

    return write


def test_save_layout_and_latest(tmp_path):
    ck = Checkpointer(tmp_path / "ck", keep=2)
    path = ck.save(3, _writer(b"abc"), {"envs": [1]}, {"counters": {"update": 3}})
    assert path.name == "u0000003"
    assert (tmp_path / "ck" / "latest").read_text().strip() == "u0000003"
    assert verify(path) is None
    assert read_rank_states(path) == [{"envs": [1]}]
    assert read_global_state(path)["counters"]["update"] == 3
    manifest = json.loads((path / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"model.bin", "rank00000.json", "state.json"}


def test_keep_last_k_and_no_temp_left(tmp_path):
    ck = Checkpointer(tmp_path, keep=2)
    for u in range(1, 5):
        ck.save(u, _writer(bytes([u])), {}, {})
    assert [p.name for p in ck.list_checkpoints()] == ["u0000003", "u0000004"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_corrupt_latest_falls_back_with_warning(tmp_path):
    ck = Checkpointer(tmp_path, keep=3)
    ck.save(1, _writer(b"one"), {}, {})
    newest = ck.save(2, _writer(b"two"), {}, {})
    (newest / "model.bin").write_bytes(b"tw0")  # bit rot / half-written file
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert ck.find_latest().name == "u0000001"


def test_incomplete_checkpoint_is_ignored(tmp_path):
    ck = Checkpointer(tmp_path, keep=3)
    ck.save(1, _writer(b"one"), {}, {})
    half = tmp_path / "u0000002"
    half.mkdir()
    (half / "model.bin").write_bytes(b"partial")  # no manifest: crashed before completion
    with pytest.warns(UserWarning, match="incomplete"):
        assert ck.find_latest().name == "u0000001"


def test_missing_file_detected(tmp_path):
    ck = Checkpointer(tmp_path)
    path = ck.save(1, _writer(b"x"), {}, {})
    (path / "model.bin").unlink()
    assert "missing file" in verify(path)


def test_no_checkpoint(tmp_path):
    assert Checkpointer(tmp_path / "nothing").find_latest() is None


def test_failed_write_leaves_no_temp_folder(tmp_path):
    ck = Checkpointer(tmp_path, keep=3)
    ck.save(1, _writer(b"one"), {}, {})

    def broken(folder):
        (folder / "model.bin").write_bytes(b"half")
        raise ValueError("a bug in the writer")

    with pytest.raises(ValueError, match="a bug in the writer"):  # not disguised
        ck.save(2, broken, {}, {})

    def unwritable(folder):
        (folder / "model.bin").mkdir()
        (folder / "model.bin").write_bytes(b"x")  # IsADirectoryError: an OSError, one line

    with pytest.raises(CheckpointError, match="u0000001 is intact"):
        ck.save(2, unwritable, {}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "u0000001"]


def test_checkpoints_sort_by_update_number(tmp_path):
    ck = Checkpointer(tmp_path, keep=5)
    for update in (9, 10_000_000):  # past the 7 zero-padded digits
        ck.save(update, _writer(bytes([update % 256])), {}, {})
    assert ck.find_latest().name == "u10000000"
