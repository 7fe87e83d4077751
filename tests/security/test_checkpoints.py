"""Checkpoint folders are matched strictly, verified strictly, and never silently given up on.

- only ``u`` + digits is a checkpoint (a stray ``checkpoints/user_backup`` once got every real
  checkpoint pruned);
- an empty, list-shaped or path-escaping manifest fails verification instead of passing or
  raising;
- when checkpoints exist but none verifies, resuming stops with one line naming the folder and
  the fix (it used to restart from update 0 in the same run);
- a checkpoint that verifies but cannot be loaded (truncated safetensors) is one line too;
- a full disk while checkpointing (a real, tiny tmpfs) leaves nothing half-written, keeps the
  previous checkpoint and `latest`, and says so in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glamhpc.checkpoint import (
    Checkpointer,
    CheckpointError,
    verify,
    write_manifest,
)
from glamhpc.cli import app

REPO = Path(__file__).resolve().parents[2]


def _writer(payload: bytes) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        (folder / "model.bin").write_bytes(payload)

    return write


def test_only_u_digits_folders_are_checkpoints(tmp_path: Path) -> None:
    backup = tmp_path / "user_backup"
    backup.mkdir()
    (backup / "precious.safetensors").write_bytes(b"keep me")
    (tmp_path / "u12abc").mkdir()
    ck = Checkpointer(tmp_path, keep=1)
    ck.save(1, _writer(b"one"), {}, {})
    ck.save(2, _writer(b"two"), {}, {})
    assert [p.name for p in ck.list_checkpoints()] == ["u0000002"]
    assert (backup / "precious.safetensors").read_bytes() == b"keep me"
    assert (tmp_path / "u12abc").is_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the stray folders are not even looked at
        assert ck.find_latest() == tmp_path / "u0000002"


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ({"format": 1, "files": {}}, "lists no files"),
        (["model.bin"], "not an object"),
        ({"format": 1, "files": ["model.bin"]}, "not an object"),
        ({"format": 1, "files": {"../../etc/passwd": "0" * 64}}, "outside the checkpoint"),
        ({"format": 1, "files": {"/etc/passwd": "0" * 64}}, "outside the checkpoint"),
        ({"format": 1, "files": {"model.bin": 7}}, "not a sha256"),
    ],
)
def test_bad_manifests_fail_verification(tmp_path: Path, manifest: object, problem: str) -> None:
    path = Checkpointer(tmp_path).save(1, _writer(b"x"), {}, {})
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    result = verify(path)
    assert result is not None and problem in result


def test_unlisted_file_fails_verification(tmp_path: Path) -> None:
    path = Checkpointer(tmp_path).save(1, _writer(b"x"), {}, {})
    (path / "planted.pt").write_bytes(b"not in the manifest")
    assert "not in the manifest" in (verify(path) or "")


def test_no_verified_checkpoint_is_an_error_not_a_restart(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path)
    ck.save(1, _writer(b"one"), {}, {})
    ck.save(2, _writer(b"two"), {}, {})
    for name in ("u0000001", "u0000002"):
        (tmp_path / name / "model.bin").write_bytes(b"rot")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one error, not a warning per checkpoint before it
        with pytest.raises(CheckpointError) as err:
            ck.find_latest()
    message = str(err.value)
    assert str(tmp_path) in message and "\n" not in message
    assert "move" in message  # the fix: move the folder aside to start over


# ---------------------------------------------------------------------------- real trainer


def _train(tmp_path: Path, *extra: str) -> tuple[int, str]:
    args = [
        "train", str(REPO / "configs" / "quickstart.yaml"), "--run-name", "ck",
        "--set", f"train.run_root={tmp_path / 'runs'}", "--set", "tracking.enabled=false",
        "--set", "env.num_envs=4", "--set", "ppo.steps_per_env=4",
        "--set", "ppo.minibatch_size=8", "--set", "train.progress=false",
        "--set", "model.device=cpu", *extra,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny run trained for 1 update (checkpoints u0000000 and u0000001), DONE removed so
    that the same command with more updates resumes it."""
    root = tmp_path_factory.mktemp("ck")
    code, out = _train(root, "--set", "train.max_updates=1")
    assert code == 0, out
    run = root / "runs" / "quickstart" / "ck"
    (run / "DONE").unlink()
    yield root


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def test_trainer_stops_when_no_checkpoint_verifies(stopped_run: Path, tmp_path: Path) -> None:
    root = _copy(stopped_run, tmp_path / "copy")
    checkpoints = root / "runs" / "quickstart" / "ck" / "checkpoints"
    for manifest in checkpoints.glob("u*/MANIFEST.json"):
        manifest.write_text("[]")
    before = sorted(p.name for p in checkpoints.iterdir())
    assert "u0000001" in before
    code, out = _train(root, "--set", "train.max_updates=2")
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert str(checkpoints) in lines[0] and "Traceback" not in out
    # Nothing restarted: no new checkpoint, no DONE.
    assert sorted(p.name for p in checkpoints.iterdir()) == before
    assert not (checkpoints.parent / "DONE").exists()


def test_truncated_safetensors_is_one_line(stopped_run: Path, tmp_path: Path) -> None:
    root = _copy(stopped_run, tmp_path / "copy")
    latest = root / "runs" / "quickstart" / "ck" / "checkpoints" / "u0000001"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    write_manifest(latest)  # the manifest matches: the damage happened before it was written
    code, out = _train(root, "--set", "train.max_updates=2")
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "u0000001" in lines[0] and "Traceback" not in out, out


# ---------------------------------------------------------------------------- full disk


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB filesystem (tmpfs); needs root, as in the project's test containers."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_while_checkpointing(tiny_fs: Path) -> None:
    import torch
    from safetensors.torch import save_file

    def write(size: int) -> Callable[[Path], None]:
        def shared(folder: Path) -> None:  # what DDP's writer does: safetensors + torch.save
            save_file({"w": torch.zeros(size)}, str(folder / "model.safetensors"))
            torch.save({"state": {0: {"exp_avg": torch.zeros(size)}}}, folder / "optimizer.pt")

        return shared

    ck = Checkpointer(tiny_fs / "checkpoints", keep=3)
    first = ck.save(1, write(1000), {"rank": 0}, {"counters": {"update": 1}})
    with pytest.raises(CheckpointError) as err:
        ck.save(2, write(100_000), {"rank": 0}, {"counters": {"update": 2}})
    message = str(err.value)
    assert "\n" not in message and "u0000002" in message and "u0000001" in message
    assert "space" in message.lower()
    leftovers = sorted(p.name for p in (tiny_fs / "checkpoints").iterdir())
    assert leftovers == ["latest", "u0000001"], leftovers
    assert verify(first) is None
    assert (tiny_fs / "checkpoints" / "latest").read_text().strip() == "u0000001"
    assert os.statvfs(tiny_fs).f_bfree > 0  # the half-written files were removed


# ---------------------------------------------------------------------------- eval's model folder


def _eval(folder: Path, out: Path) -> tuple[int, str]:
    args = [
        "eval", "--checkpoint", str(folder), "--level", "GoToRedBallNoDists",
        "--episodes", "2", "--num-envs", "2", "--no-track", "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _model(stopped_run: Path, tmp_path: Path) -> Path:
    return _copy(stopped_run / "runs" / "quickstart" / "ck" / "model", tmp_path / "model")


def _nan_weights(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _damage(kind: str, folder: Path) -> None:
    weights = folder / "model.safetensors"
    if kind == "tampered":
        weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    elif kind == "no manifest":
        (folder / "MANIFEST.json").unlink()
    elif kind == "empty manifest":
        (folder / "MANIFEST.json").write_text('{"format": 1, "files": {}}')
    elif kind == "nan weights":  # what an unguarded lr=inf run exported, manifest and all
        _nan_weights(folder)
        write_manifest(folder)
    elif kind == "truncated safetensors":
        weights.write_bytes(weights.read_bytes()[:100])
        write_manifest(folder)
    elif kind == "list glamhpc.json":
        (folder / "glamhpc.json").write_text("[1, 2]")
        write_manifest(folder)
    elif kind == "bad history":
        meta = json.loads((folder / "glamhpc.json").read_text())
        (folder / "glamhpc.json").write_text(json.dumps({**meta, "history": "three"}))
        write_manifest(folder)


def test_eval_accepts_an_intact_export(stopped_run: Path, tmp_path: Path) -> None:
    code, out = _eval(_model(stopped_run, tmp_path), tmp_path / "out")
    assert code == 0, out


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("tampered", "checksum mismatch in model.safetensors"),
        ("no manifest", "no MANIFEST.json"),
        ("empty manifest", "lists no files"),
        ("nan weights", "non-finite"),
        ("truncated safetensors", "model.safetensors"),
        ("list glamhpc.json", "glamhpc.json"),
        ("bad history", "history"),
    ],
)
def test_eval_refuses_a_bad_model_folder(
    stopped_run: Path, tmp_path: Path, kind: str, fragment: str
) -> None:
    folder = _model(stopped_run, tmp_path)
    _damage(kind, folder)
    code, out = _eval(folder, tmp_path / "out")
    lines = out.strip().splitlines()
    assert code == 2 and "Traceback" not in out, out
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], out
    assert not (tmp_path / "out").exists()  # refused before anything was evaluated or written


def test_eval_model_option_verifies_an_export_too(stopped_run: Path, tmp_path: Path) -> None:
    folder = _model(stopped_run, tmp_path)
    _damage("nan weights", folder)
    args = ["eval", "--model", str(folder), "--level", "GoToRedBallNoDists", "--episodes", "2"]
    result = CliRunner().invoke(app, [*args, "--no-track", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "non-finite" in result.output, result.output
