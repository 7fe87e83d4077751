"""Trajectory datasets for behaviour cloning: JSONL shards plus a manifest, written atomically.

Layout of a dataset folder (what `glamhpc demos` writes and `agent: bc` reads)::

    shard-00000.jsonl   one row per decision: prompt, candidates, action index, action text,
    shard-00001.jsonl   episode id, step and the episode's success
    manifest.json       counts, sha256 of every shard, source agent, level, seed, env settings

The folder is assembled under a hidden temporary name next to its destination and renamed into
place once the manifest (written last) is on disk, so a crash leaves no folder that looks
complete; `validate` re-checks every shard's sha256 and row count before anything is trained on
it. Torch-free: the writer runs in `glamhpc demos` on any node.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glamhpc import __version__
from glamhpc.fsutil import atomic_write_json, fsync_dir, fsync_file, sha256_file
from glamhpc.inputs.errors import ConfigError

MANIFEST = "manifest.json"
KIND = "glamhpc-demos"
FORMAT = 1
ROWS_PER_SHARD = 50_000
ROW_KEYS = ("prompt", "candidates", "action", "action_text", "episode", "step", "success")


class DatasetError(ConfigError):
    """A missing, incomplete or mismatching dataset; one line naming the problem and the fix."""


@dataclass(frozen=True)
class Shard:
    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a dataset holds and how it was made (manifest.json)."""

    source: str
    """``bot`` or ``run:<folder>`` (the agent that played)."""
    level: str
    seed: int
    episodes: int
    """Episodes played; the dataset keeps those that succeeded unless ``only_success`` is off."""
    kept_episodes: int
    rows: int
    action_space: str
    history: int
    language: str | None
    fix_grammar: bool
    candidates: list[str]
    only_success: bool
    shards: list[Shard] = field(default_factory=list)
    kind: str = KIND
    format: int = FORMAT
    glamhpc_version: str = __version__


def _fix(path: Path) -> str:
    return f"write it again with `glamhpc demos ... --out {path}` (after removing the folder)"


def validate(path: str | Path) -> Manifest:
    """The manifest of a complete, intact dataset at ``path``.

    Raises:
        DatasetError: no such folder, no manifest (an unfinished write), an unreadable manifest,
            a missing shard, a sha256 or row-count mismatch.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(
            f"dataset {str(folder)!r} does not exist; write one with `glamhpc demos --agent bot "
            f"--level LEVEL --episodes N --out {folder}` or set bc.dataset=bot:N"
        )
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise DatasetError(
            f"dataset {str(folder)!r} has no {MANIFEST} (not a dataset, or an unfinished write); "
            + _fix(folder)
        ) from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"dataset {str(folder)!r}: unreadable {MANIFEST} ({exc})") from None
    try:
        if data.get("kind") != KIND or data.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} {KIND} manifest")
        shards = [Shard(**s) for s in data.pop("shards")]
        manifest = Manifest(**data, shards=shards)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        bad = f"dataset {str(folder)!r}: bad {MANIFEST} ({exc}); {_fix(folder)}"
        raise DatasetError(bad) from None
    for shard in manifest.shards:
        problem = _shard_problem(folder, shard)
        if problem:
            raise DatasetError(f"dataset {str(folder)!r}: {problem}; {_fix(folder)}")
    if sum(s.rows for s in manifest.shards) != manifest.rows:
        raise DatasetError(f"dataset {str(folder)!r}: shard rows do not add up; {_fix(folder)}")
    return manifest


def _shard_problem(folder: Path, shard: Shard) -> str | None:
    path = folder / shard.file
    if Path(shard.file).name != shard.file or not path.is_file():
        return f"shard {shard.file!r} is missing"
    if sha256_file(path) != shard.sha256:
        return f"shard {shard.file} does not match its sha256 (changed or truncated)"
    with path.open("rb") as fh:
        lines = sum(1 for _ in fh)
    if lines != shard.rows:
        return f"shard {shard.file} has {lines} rows, the manifest says {shard.rows}"
    return None


def read_rows(path: str | Path, manifest: Manifest | None = None) -> list[dict[str, Any]]:
    """Every row of a validated dataset, in shard order."""
    folder = Path(path)
    manifest = manifest or validate(folder)
    rows: list[dict[str, Any]] = []
    for shard in manifest.shards:
        with (folder / shard.file).open(encoding="utf-8") as fh:
            rows.extend(json.loads(line) for line in fh)
    return rows


def check_matches(manifest: Manifest, path: str | Path, **wanted: Any) -> None:
    """Refuse a dataset recorded with other env settings than the run's (prompts would differ).

    Raises:
        DatasetError: the first setting that differs, with both values.
    """
    for key, value in wanted.items():
        have = getattr(manifest, key)
        if have != value:
            raise DatasetError(
                f"dataset {str(path)!r} was recorded with {key}={have!r} but the run uses "
                f"{value!r}; record it again with the run's settings or change the config"
            )


class DatasetWriter:
    """Rows into JSONL shards in a hidden temporary folder; `finish` renames it into place."""

    def __init__(self, out: str | Path, rows_per_shard: int = ROWS_PER_SHARD) -> None:
        self.out = Path(out)
        if self.out.exists():
            raise DatasetError(
                f"{str(self.out)!r} already exists; choose another --out or remove it first"
            )
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self.rows_per_shard = rows_per_shard
        self.shards: list[Shard] = []
        self.rows = 0
        self._fh: Any = None
        self._in_shard = 0

    def write_episode(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            if self._fh is None or self._in_shard >= self.rows_per_shard:
                self._close_shard()
                name = f"shard-{len(self.shards):05d}.jsonl"
                self._fh = (self.tmp / name).open("w", encoding="utf-8")
                self._in_shard = 0
            self._fh.write(json.dumps({k: row[k] for k in ROW_KEYS}, ensure_ascii=False) + "\n")
            self._in_shard += 1
            self.rows += 1

    def _close_shard(self) -> None:
        if self._fh is None:
            return
        self._fh.close()
        path = Path(self._fh.name)
        fsync_file(path)
        self.shards.append(Shard(path.name, self._in_shard, sha256_file(path)))
        self._fh = None

    def finish(self, manifest: Manifest) -> Manifest:
        """Write the manifest last, then rename the folder into place; returns the manifest."""
        self._close_shard()
        done = Manifest(**{**asdict(manifest), "shards": self.shards, "rows": self.rows})
        atomic_write_json(self.tmp / MANIFEST, asdict(done))
        fsync_dir(self.tmp)
        os.rename(self.tmp, self.out)
        fsync_dir(self.out.parent)
        return done

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def iter_pairs(rows: Sequence[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(prompt, action text) of each row: what behaviour cloning trains on."""
    for row in rows:
        yield row["prompt"], row["action_text"]
