"""Atomic, complete, verifiable checkpoints with a `latest` pointer.

Layout of one run's ``checkpoints/`` folder::

    u000010/            one complete checkpoint (update 10)
      model.safetensors   model + value head (rank 0; FSDP writes a sharded dcp/ folder instead)
      optimizer.pt        optimizer state (tensors only; loaded with weights_only=True)
      rank00000.json ...  per-rank state: env batch, counters (JSON: nothing is unpickled)
      state.json          global counters and the resolved config
      MANIFEST.json       sha256 of every file above, written last inside the folder
    latest              name of the newest complete checkpoint, written last of all

A checkpoint is assembled in a hidden temporary folder and renamed into place, so a crash leaves
either a complete checkpoint or a temporary folder that is ignored and cleaned later. Loading
verifies the manifest; a corrupt newest checkpoint falls back to the previous one with a warning.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glamhpc.fsutil import atomic_write_json, atomic_write_text, fsync_dir, fsync_file, sha256_file

MANIFEST = "MANIFEST.json"
LATEST = "latest"
FORMAT_VERSION = 1


def checkpoint_name(update: int) -> str:
    return f"u{update:07d}"


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    files: dict[str, str] = {}
    for path in _files_under(folder):  # one pass: hash each file, then make it durable
        files[str(path.relative_to(folder))] = sha256_file(path)
        fsync_file(path)
    atomic_write_json(folder / MANIFEST, {"format": FORMAT_VERSION, "files": files})


def verify(folder: Path) -> str | None:
    """None when the checkpoint is complete and intact, else what is wrong."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no MANIFEST.json (incomplete write)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
    except (ValueError, KeyError) as exc:
        return f"unreadable manifest ({exc})"
    for rel, digest in files.items():
        path = folder / rel
        if not path.is_file():
            return f"missing file {rel}"
        if sha256_file(path) != digest:
            return f"checksum mismatch in {rel}"
    return None


class Checkpointer:
    """Saves and finds checkpoints of one run. Collective: every rank calls save()."""

    def __init__(
        self,
        folder: Path,
        keep: int = 3,
        rank: int = 0,
        barrier: Callable[[], None] = lambda: None,
    ) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self.rank = rank
        self.barrier = barrier

    # ------------------------------------------------------------------ saving
    def save(
        self,
        update: int,
        write_shared: Callable[[Path], None],
        rank_state: dict[str, Any],
        global_state: dict[str, Any],
        write_rank_files: Callable[[Path], None] | None = None,
    ) -> Path:
        """Write checkpoint ``update``: rank 0 writes shared files, every rank its own state.

        ``write_shared(tmp)`` runs on rank 0 only (DDP: full model and optimizer);
        ``write_rank_files(tmp)`` runs on every rank (FSDP: its dcp shard, collective).
        """
        name = checkpoint_name(update)
        tmp = self.folder / f".tmp-{name}"
        final = self.folder / name
        if self.rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        self.barrier()
        if write_rank_files is not None:
            write_rank_files(tmp)
        atomic_write_json(tmp / f"rank{self.rank:05d}.json", rank_state)
        if self.rank == 0:
            write_shared(tmp)
            atomic_write_json(tmp / "state.json", global_state)
        self.barrier()
        if self.rank == 0:
            write_manifest(tmp)
            if final.exists():  # same update saved twice (e.g. signal right after a periodic save)
                shutil.rmtree(final)
            tmp.rename(final)
            fsync_dir(self.folder)
            atomic_write_text(self.folder / LATEST, name + "\n")
            self._prune()
        self.barrier()
        return final

    def _prune(self) -> None:
        complete = self.list_checkpoints()
        for old in complete[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.folder.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)

    # ------------------------------------------------------------------ loading
    def list_checkpoints(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.is_dir() and p.name.startswith("u"))

    def find_latest(self) -> Path | None:
        """The newest intact checkpoint.

        The `latest` pointer is advisory: a checkpoint renamed into place just before a crash is
        complete (its manifest verifies) even if the pointer was not updated yet, so it is used.
        """
        for path in self.list_checkpoints()[::-1]:
            problem = verify(path)
            if problem is None:
                return path
            warnings.warn(
                f"checkpoint {path} is unusable ({problem}); falling back to an older one",
                stacklevel=2,
            )
        return None


def read_rank_states(folder: Path) -> list[dict[str, Any]]:
    """Every rank's JSON state of a checkpoint, ordered by rank."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]


def read_global_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "state.json").read_text())
