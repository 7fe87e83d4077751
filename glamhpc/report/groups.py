"""Grouping a report's runs (by swept values, seeds averaged) and one summary row per group."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from glamhpc.report.loading import RunData
from glamhpc.tracking.runs import SWEEP_TAG_PREFIX
from glamhpc.tracking.uri import TrackingError
from glamhpc.ui.plots import aggregate


@dataclass
class GroupSummary:
    """One line of a report's table: a group of runs (usually the seeds of one setting)."""

    group: str
    n: int
    final_mean: float
    final_std: float
    best: float
    frames: float
    steps_per_s: float | None


def group_value(run: RunData, key: str) -> str | None:
    """The value of ``key`` for a run: sweep tag, then param, then tag (``params.``/``tags.``
    prefixes force one source)."""
    if key.startswith("params."):
        return run.params.get(key[len("params.") :])
    if key.startswith("tags."):
        return run.tags.get(key[len("tags.") :])
    for source in (run.tags.get(SWEEP_TAG_PREFIX + key), run.params.get(key), run.tags.get(key)):
        if source is not None:
            return source
    return None


def default_group_keys(runs: Sequence[RunData]) -> list[str]:
    """Swept keys that differ between runs, minus seeds: seeds are what a group averages over."""
    keys: set[str] = set()
    for run in runs:
        keys.update(k[len(SWEEP_TAG_PREFIX) :] for k in run.tags if k.startswith(SWEEP_TAG_PREFIX))
    # `sweep.index` (set by glamhpc.launch.sweep) is unique per child: never a grouping key.
    keys = {k for k in keys if "seed" not in k.lower() and k != "index"}
    return sorted(k for k in keys if len({group_value(r, k) for r in runs}) > 1)


def group_runs(runs: Sequence[RunData], group_by: str | None) -> dict[str, list[RunData]]:
    """Label -> runs. Without ``group_by``: the default sweep keys, else one group per run."""
    keys = [k.strip() for k in group_by.split(",")] if group_by else default_group_keys(runs)
    groups: dict[str, list[RunData]] = {}
    if not keys:
        for run in runs:
            groups.setdefault(run.name, []).append(run)
        return groups
    if group_by and all(group_value(r, k) is None for r in runs for k in keys):
        known = sorted({*(k for r in runs for k in r.params), *(k for r in runs for k in r.tags)})
        raise TrackingError(
            f"no run has '{group_by}' as a param or tag; try one of: "
            + ", ".join(k for k in known if not k.startswith("mlflow."))[:600]
        )
    for run in runs:
        parts = [f"{_short_key(k)}={group_value(run, k)}" for k in keys]
        groups.setdefault(", ".join(parts), []).append(run)
    return dict(sorted(groups.items(), key=lambda kv: natural_key(kv[0])))


def _short_key(key: str) -> str:
    for prefix in ("params.", "tags."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def natural_key(text: str) -> list[tuple[int, float | str]]:
    """Sort key putting lr=1e-05 before lr=0.0001 and seed=2 before seed=10."""
    out: list[tuple[int, float | str]] = []
    for part in re.split(r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)", text):
        try:
            out.append((0, float(part)))
        except ValueError:
            out.append((1, part))
    return out


def summarize_groups(groups: Mapping[str, Sequence[RunData]]) -> list[GroupSummary]:
    """Final value (mean ± std over the group's runs), best of the mean curve, frames, steps/s."""
    import numpy as np

    rows = []
    for label, runs in groups.items():
        finals = np.array([r.values[-1] for r in runs if r.values], dtype=float)
        _, mean_curve, _, _ = aggregate([(r.steps, r.values) for r in runs])
        sps = [r.steps_per_s for r in runs if r.steps_per_s is not None]
        rows.append(
            GroupSummary(
                group=label,
                n=len(runs),
                final_mean=float(finals.mean()),
                final_std=float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
                best=float(np.max(mean_curve)),
                frames=float(np.mean([r.steps[-1] for r in runs])),
                steps_per_s=float(np.mean(sps)) if sps else None,
            )
        )
    return rows
