"""Where model files live on disk: the Hugging Face hub cache and glamhpc's own cache.

The one place that knows the layouts, shared by the model loader (``policy.models``), the node
checks (``launch.doctor``) and image baking (``containers``). Plain pathlib only: the doctor and
the container code run on login nodes and inside thin images where importing torch or
transformers would cost seconds or fail, so this module imports neither (huggingface_hub is
touched only by ``hf_offline``, lazily, and it pulls in no torch).

Layouts:

- hub cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``): one
  ``models--org--name`` folder per repo, ``refs/main`` naming the revision, the files under
  ``snapshots/<revision>/`` (symlinks into ``blobs/``);
- glamhpc cache (``$GLAMHPC_CACHE``, else ``~/.cache/glamhpc``): one ``tiny-t5-<version>``
  folder per tiny-t5 build.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GLAMHPC_CACHE_ENV",
    "TINY_T5",
    "CachedModel",
    "glamhpc_cache_root",
    "hf_offline",
    "hub_cache_candidates",
    "hub_cache_dir",
    "inspect_cached_model",
    "is_cached_locally",
    "is_offline_env",
    "missing_model_files",
    "repo_folder",
    "tiny_t5_builds",
    "tiny_t5_folder",
]

#: The built-in model name: built offline into the glamhpc cache, never fetched from the hub.
TINY_T5 = "tiny-t5"
GLAMHPC_CACHE_ENV = "GLAMHPC_CACHE"
_TRUE = frozenset({"1", "true", "yes", "on"})

# ----------------------------------------------------------------------------- glamhpc cache


def glamhpc_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """glamhpc's own cache: ``cache_dir``, else ``$GLAMHPC_CACHE``, else ``~/.cache/glamhpc``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(GLAMHPC_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "glamhpc"


def tiny_t5_folder(version: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the tiny-t5 build ``version`` (it may not exist yet)."""
    return glamhpc_cache_root(cache_dir) / f"{TINY_T5}-{version}"


def tiny_t5_builds(cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """tiny-t5 builds present in the cache (any version), sorted by folder name.

    Lets a caller that must not import torch (the doctor) report a build without computing the
    current version, which needs the tokenizer corpus.
    """
    root = glamhpc_cache_root(cache_dir)
    return sorted(p.parent for p in root.glob(f"{TINY_T5}-*/config.json"))


# ----------------------------------------------------------------------------- hub cache


def hub_cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The hub cache folder for an HF_HOME-style ``cache`` (None: the environment's default)."""
    if cache is not None:
        return Path(cache) / "hub"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def hub_cache_candidates(cache: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders that may hold ``models--*`` for ``cache``: HF_HOME-style (``cache/hub``) first,
    then ``cache`` itself, which is what ``from_pretrained(cache_dir=...)`` writes."""
    if cache is None:
        return [hub_cache_dir()]
    return [Path(cache) / "hub", Path(cache)]


def repo_folder(repo_id: str) -> str:
    """Hub cache folder name of a model id (``google/flan-t5-small`` ->
    ``models--google--flan-t5-small``)."""
    return "models--" + repo_id.replace("/", "--")


@dataclass(frozen=True)
class CachedModel:
    """One model found in a hub cache: its folder, the snapshot ``refs/main`` points to, and
    what is missing for an offline load (empty when complete)."""

    repo_id: str
    folder: Path
    revision: str | None
    snapshot: Path | None
    missing: tuple[str, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        return self.snapshot is not None and not self.missing


def inspect_cached_model(repo_id: str, cache: str | os.PathLike[str] | None = None) -> CachedModel:
    """Check that a hub cache holds everything ``from_pretrained`` needs offline.

    Offline loading resolves ``refs/main`` to a snapshot, then needs config.json, the weights
    (single file or every shard of an index) and a tokenizer in that snapshot.
    """
    folders = [d / repo_folder(repo_id) for d in hub_cache_candidates(cache)]
    folder = next((f for f in folders if f.is_dir()), folders[0])
    ref = folder / "refs" / "main"
    if not ref.is_file():
        return CachedModel(repo_id, folder, None, None, (f"{folder} (not prefetched)",))
    revision = ref.read_text().strip()
    snapshot = folder / "snapshots" / revision
    if not snapshot.is_dir():
        return CachedModel(repo_id, folder, revision, None, (f"snapshot {revision}",))
    return CachedModel(repo_id, folder, revision, snapshot, tuple(missing_model_files(snapshot)))


def is_cached_locally(repo_id: str, cache: str | os.PathLike[str] | None = None) -> bool:
    """Whether config, weights and tokenizer of hub model ``repo_id`` are in the local cache."""
    return inspect_cached_model(repo_id, cache).complete


def missing_model_files(folder: Path) -> list[str]:
    """What a model folder (snapshot or save_pretrained output) lacks for an offline load."""
    missing: list[str] = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    weights = [folder / n for n in ("model.safetensors", "pytorch_model.bin")]
    indexes = [folder / n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json")]
    index = next((p for p in indexes if p.is_file()), None)
    if index is not None:
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError):
            missing.append(f"{index.name} (unreadable)")
            shards = set()
        missing += sorted(s for s in shards if not (folder / s).is_file())
    elif not any(p.is_file() for p in weights):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    tokenizer = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
    if not any((folder / n).is_file() for n in tokenizer):
        missing.append("tokenizer (tokenizer.json or spiece.model)")
    return missing


# ----------------------------------------------------------------------------- offline mode


def is_offline_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``environ`` (default: this process's) sets HF_HUB_OFFLINE to a true value."""
    env = os.environ if environ is None else environ
    return env.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hf_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted by this process.

    The environment is read now (it may have changed since huggingface_hub was imported), and
    huggingface_hub's own flag counts too (it also honours TRANSFORMERS_OFFLINE).
    """
    from huggingface_hub import constants

    return is_offline_env() or bool(constants.HF_HUB_OFFLINE)
