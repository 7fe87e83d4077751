"""Baking a model into an image: stage one prefetched hub model into the build context.

Where the hub cache is and what a complete model is come from ``glamhpc.policy.hubcache``
(torch-free), the same lookup the model loader and ``glamhpc doctor`` use.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from glamhpc.containers.layout import BAKE_DIR, ContainerError
from glamhpc.policy.hubcache import hub_cache_dir, inspect_cached_model, repo_folder


def stage_model(repo_id: str, cache: str | os.PathLike[str] | None, context: Path) -> Path:
    """Copy one prefetched model from a hub cache into ``context/BAKE_DIR/hub/`` for baking.

    Only ``refs/main`` and the snapshot it names are staged, with symlinks resolved: the blobs
    folder would otherwise be copied twice (Apptainer's %files follows links), and an offline
    ``from_pretrained`` needs nothing else. Files are hard-linked when the cache is on the same
    filesystem, so large models cost no extra space while staged.
    """
    model = inspect_cached_model(repo_id, cache)
    if not model.complete:
        raise ContainerError(
            f"model '{repo_id}' is not completely in the cache {hub_cache_dir(cache)} "
            f"(missing: {', '.join(model.missing)}). Fetch it first on a node with internet: "
            f"glamhpc models prefetch {repo_id}" + (f" --cache {cache}" if cache else "")
        )
    assert model.snapshot is not None and model.revision is not None
    dest = context / BAKE_DIR / "hub" / repo_folder(repo_id)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "refs").mkdir(parents=True)
    (dest / "refs" / "main").write_text(model.revision)
    target = dest / "snapshots" / model.revision
    for src in sorted(model.snapshot.rglob("*")):
        out = target / src.relative_to(model.snapshot)
        if src.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        real = src.resolve()
        try:
            os.link(real, out)
        except OSError:
            shutil.copy2(real, out)
    return dest


def clear_staged(context: Path) -> None:
    """Empty BAKE_DIR (keeping its .gitignore) so the next build bakes nothing by accident."""
    bake = context / BAKE_DIR
    if not bake.is_dir():
        return
    for child in bake.iterdir():
        if child.name == ".gitignore":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
