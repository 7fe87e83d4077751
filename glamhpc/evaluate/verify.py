"""What `glamhpc eval` checks in an exported model folder before it evaluates anything.

A training run's export (``<run dir>/model``, or its MLflow ``model`` artifact) carries a
``MANIFEST.json`` written last (`glamhpc.checkpoint.write_manifest`): the folder must hold
exactly the files it lists, unchanged. Verified weights can still be useless: a run whose
learning rate was not finite exported NaN weights that evaluate to a success rate of 0.000 without
a word, so floating-point tensors must be finite too. ``glamhpc.json`` (what eval needs to rebuild
the policy) is read here into checked fields. Every problem is an `EvalError`: one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glamhpc.checkpoint import MANIFEST, verify
from glamhpc.evaluate.agents import EvalError

META_FILE = "glamhpc.json"


def verify_model_folder(folder: Path) -> None:
    """Manifest first (cheap to explain), then every weight finite.

    Raises:
        EvalError: missing or failing manifest, unreadable safetensors, non-finite weights.
    """
    if not (folder / MANIFEST).is_file():
        raise EvalError(
            f"model folder {folder} has no {MANIFEST}: its export was interrupted or it was "
            "exported before exports carried one; export it again by resuming its run, or, if "
            'you trust its files, write one with `python -c "import pathlib, glamhpc.checkpoint '
            f"as c; c.write_manifest(pathlib.Path('{folder}'))\"`"
        )
    problem = verify(folder)
    if problem is not None:
        raise EvalError(
            f"model folder {folder} fails its manifest ({problem}): it was changed or damaged "
            "after the export; evaluate an intact copy (the run's MLflow `model` artifact) or "
            "re-export it"
        )
    for path in sorted(folder.glob("*.safetensors")):
        bad = _first_non_finite(path)
        if bad is not None:
            raise EvalError(
                f"{path} holds non-finite weights ({bad}): the training run diverged (NaN/inf); "
                "evaluate an earlier checkpoint or retrain with a lower ppo.lr"
            )


def _first_non_finite(path: Path) -> str | None:
    """The first floating-point tensor with a NaN or inf, described; None when all are finite."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open has keys(), no __iter__
                tensor = fh.get_tensor(key)  # one tensor at a time: memory stays one tensor
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    return f"tensor {key!r}"
    except (SafetensorError, OSError) as exc:
        lines = str(exc).strip().splitlines() or [""]
        raise EvalError(
            f"{path} is not a readable safetensors file ({lines[0][:200]}); re-export the model"
        ) from None
    return None


@dataclass(frozen=True)
class ModelMeta:
    """The fields of ``glamhpc.json`` that evaluation uses, type-checked."""

    action_space: str | None
    history: int
    scoring: str
    frames: int | None
    level: str | None


def read_meta(folder: Path) -> ModelMeta:
    """``folder/glamhpc.json``, checked field by field.

    Raises:
        EvalError: unreadable, not an object, or a field of the wrong type or range.
    """
    path = folder / META_FILE
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EvalError(f"{path} is not a JSON object; re-export the model")

    def field(name: str, kind: type, default: Any) -> Any:
        value = data.get(name, default)
        if value is not default and (not isinstance(value, kind) or isinstance(value, bool)):
            raise EvalError(
                f"{path}: {name!r} must be a {kind.__name__}, got {value!r:.60}; "
                "re-export the model"
            )
        return value

    history = field("history", int, 3)
    if not 1 <= history <= 9:
        raise EvalError(f"{path}: 'history' must be between 1 and 9, got {history}")
    scoring = field("scoring", str, "glam")
    if scoring not in ("glam", "paper"):
        raise EvalError(f"{path}: 'scoring' must be glam or paper, got {scoring!r:.60}")
    frames = field("frames", int, None)
    return ModelMeta(
        action_space=field("action_space", str, None),
        history=history,
        scoring=scoring,
        frames=frames,
        level=field("level", str, None) or None,
    )
