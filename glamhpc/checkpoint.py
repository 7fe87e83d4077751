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
either a complete checkpoint or a temporary folder that is ignored and cleaned later; a write that
fails (a full disk) removes its temporary folder at once and raises `CheckpointError`, leaving the
previous checkpoint and `latest` as they were. Only folders named ``u`` + digits are checkpoints:
anything else in the folder is neither loaded nor pruned.

Loading verifies the manifest, which must list exactly the folder's files; a corrupt newest
checkpoint falls back to the previous one with a warning, and when checkpoints exist but none
verifies, `find_latest` raises `CheckpointError` instead of letting the run start over.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glamhpc.fsutil import atomic_write_json, atomic_write_text, fsync_dir, fsync_file, sha256_file

MANIFEST = "MANIFEST.json"
LATEST = "latest"
FORMAT_VERSION = 1
#: What a checkpoint folder is called; nothing else in ``checkpoints/`` is loaded or pruned.
CHECKPOINT_NAME = re.compile(r"u[0-9]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Below this many free bytes after a failed write, the filesystem counts as full (torch.save
#: reports a full disk only as "unexpected pos ..." with no errno).
_FULL_BYTES = 1 << 20
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or none can be loaded; one line that says what to do."""


def checkpoint_name(update: int) -> str:
    return f"u{update:07d}"


def is_checkpoint_name(name: str) -> bool:
    return CHECKPOINT_NAME.fullmatch(name) is not None


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    files: dict[str, str] = {}
    for path in _files_under(folder):  # one pass: hash each file, then make it durable
        files[str(path.relative_to(folder))] = sha256_file(path)
        fsync_file(path)
    atomic_write_json(folder / MANIFEST, {"format": FORMAT_VERSION, "files": files})


def verify(folder: Path) -> str | None:
    """None when the checkpoint is complete and intact, else what is wrong (never raises)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no MANIFEST.json (incomplete write)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({exc})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return "manifest is not an object with a 'files' object"
    if not files:
        return "manifest lists no files"
    try:
        present = {str(p.relative_to(folder)) for p in _files_under(folder)}
    except OSError as exc:
        return f"unreadable folder ({exc})"
    for rel, digest in files.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return f"manifest names a file outside the checkpoint ({rel!r})"
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            return f"manifest entry {rel!r} is not a sha256"
        if rel not in present:
            return f"missing file {rel}"
        try:
            if sha256_file(folder / rel) != digest:
                return f"checksum mismatch in {rel}"
        except OSError as exc:
            return f"unreadable file {rel} ({exc.strerror or exc})"
    unlisted = sorted(present - set(files))
    if unlisted:
        return f"file {unlisted[0]} is not in the manifest"
    return None


def _disk_full(exc: BaseException, folder: Path) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # the exception's causes, bounded (a chain may loop)
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        if any(s in str(seen) for s in ("No space left", "Disk quota", "File too large")):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < _FULL_BYTES


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
        try:
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
        except Exception as exc:
            error = self._failed_write(name, tmp, exc)
            if error is exc:
                raise
            raise error from exc
        if self.rank == 0:
            previous = self._newest_name()
            if final.exists():  # same update saved twice (e.g. signal right after a periodic save)
                shutil.rmtree(final)
            tmp.rename(final)
            fsync_dir(self.folder)
            try:
                atomic_write_text(self.folder / LATEST, name + "\n")
            except OSError as exc:
                # The checkpoint is complete (the pointer is advisory); the next save would fail.
                raise CheckpointError(
                    f"checkpoint {final} is complete but the `latest` pointer still names "
                    f"{previous or 'nothing'}: {exc.strerror or exc}; free space in "
                    f"{self.folder} and resume"
                ) from exc
            self._prune()
        self.barrier()
        return final

    def _newest_name(self) -> str | None:
        names = [p.name for p in self.list_checkpoints()]
        return names[-1] if names else None

    def _failed_write(self, name: str, tmp: Path, exc: Exception) -> Exception:
        """Remove the half-written checkpoint; a full disk or an OSError becomes one line."""
        full = _disk_full(exc, self.folder)  # before the removal frees the space again
        shutil.rmtree(tmp, ignore_errors=True)
        previous = self._newest_name()
        kept = f"checkpoint {previous} is intact" if previous else "there is no earlier checkpoint"
        if full:
            return CheckpointError(
                f"no space left on the filesystem of {self.folder} while writing checkpoint "
                f"{name}: nothing of it was kept and {kept}; free space (or point "
                "train.run_root at a larger filesystem) and resume with the same command"
            )
        if isinstance(exc, OSError):
            return CheckpointError(
                f"cannot write checkpoint {name} in {self.folder}: {exc.strerror or exc} "
                f"({exc.filename or 'write failed'}); nothing of it was kept and {kept}"
            )
        return exc

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
        found = [p for p in self.folder.iterdir() if p.is_dir() and is_checkpoint_name(p.name)]
        return sorted(found, key=lambda p: int(p.name[1:]))

    def find_latest(self) -> Path | None:
        """The newest intact checkpoint; None when there is no checkpoint at all.

        The `latest` pointer is advisory: a checkpoint renamed into place just before a crash is
        complete (its manifest verifies) even if the pointer was not updated yet, so it is used.

        Raises:
            CheckpointError: checkpoints exist but none verifies. Starting over would silently
                train from update 0 into the same run (and prune the damaged ones).
        """
        candidates = self.list_checkpoints()
        unusable: list[tuple[Path, str]] = []
        for path in candidates[::-1]:
            problem = verify(path)
            if problem is None:
                # Said only when falling back: when nothing verifies, the error says it all.
                for bad, why in unusable:
                    warnings.warn(
                        f"checkpoint {bad} is unusable ({why}); falling back to an older one",
                        stacklevel=2,
                    )
                return path
            unusable.append((path, problem))
        if not unusable:
            return None
        newest, why = unusable[0]
        raise CheckpointError(
            f"none of the {len(unusable)} checkpoints in {self.folder} verifies (newest "
            f"{newest.name}: {why}); restore a good checkpoint there, or move the folder aside "
            f"(mv {self.folder} {self.folder}.bad) to start this run over"
        )


def _read_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object; the checkpoint is damaged")
    return data


def read_rank_states(folder: Path) -> list[dict[str, Any]]:
    """Every rank's JSON state of a checkpoint, ordered by rank."""
    return [_read_object(p) for p in sorted(folder.glob("rank*.json"))]


def read_global_state(folder: Path) -> dict[str, Any]:
    return _read_object(folder / "state.json")
