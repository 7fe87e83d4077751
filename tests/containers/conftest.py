"""Fixtures for the container tests: stand-in engines on PATH, a synthetic hub cache."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "bin"
VENV_BIN = Path(sys.executable).parent


def read_log(path: Path) -> list[dict]:
    """Calls recorded by the stand-in engines, oldest first."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def standin_env(tmp_path: Path) -> dict[str, str]:
    """Environment with the stand-in engines first on PATH and nothing else container-ish.

    /usr/local/bin is left out on purpose: some machines have a bare docker CLI there.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GLAMHPC_", "APPTAINER", "SINGULARITY", "DOCKER"))
    }
    env["PATH"] = os.pathsep.join([str(STANDINS), str(VENV_BIN), "/usr/bin", "/bin"])
    env["GLAMHPC_STANDIN_LOG"] = str(tmp_path / "standin.log")
    env["GLAMHPC_STANDIN_STATE"] = str(tmp_path / "standin-state")
    return env


def make_hub_model(cache: Path, repo_id: str, *, complete: bool = True) -> Path:
    """A hub cache entry laid out like huggingface_hub writes it (blobs + symlinked snapshot)."""
    folder = cache / "hub" / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    files = {"config.json": b'{"model_type": "t5"}', "tokenizer.json": b"{}"}
    if complete:
        files["model.safetensors"] = b"\0" * 64
    for index, (name, content) in enumerate(files.items()):
        blob = folder / "blobs" / f"blob{index}"
        blob.write_bytes(content)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each Dockerfile instruction, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        pending = ""
        out.append((keyword.upper(), " ".join(rest.split())))
    return out
