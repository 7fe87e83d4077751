"""Grouping a report's runs (by swept values, seeds averaged) and one summary row per group."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from glamhpc.report.loading import RunData
from glamhpc.report.stats import DuplicateSeeds, band, one_per_seed
from glamhpc.tracking.runs import SWEEP_TAG_PREFIX
from glamhpc.tracking.uri import TrackingError
from glamhpc.ui.plots import align


@dataclass
class GroupSummary:
    """One line of a report's table: one setting, over its distinct seeds."""

    group: str
    n: int
    """Distinct seeds (duplicates collapsed, see ``distinct_seeds``)."""
    final_mean: float
    final_low: float
    final_high: float
    """The band (``band``) of the final value across seeds."""
    band: str
    best: float
    frames: float
    """The last frame every seed of the group reached: where ``final`` is read."""
    steps_per_s: float | None
    """Mean over the group's seeds of each run's mean env steps/s."""
    seeds: list[str] = field(default_factory=list)


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


def run_seed(run: RunData) -> str | None:
    """A run's seed (sweep tag, else param), None when it logged none."""
    return group_value(run, "seed")


def distinct_seeds(
    groups: Mapping[str, Sequence[RunData]], duplicates: str = "refuse"
) -> tuple[dict[str, list[RunData]], list[str]]:
    """Each group reduced to one run per distinct seed (glamhpc.report.stats.one_per_seed);
    returns (groups, notes). Raises TrackingError for different runs sharing a seed."""
    out: dict[str, list[RunData]] = {}
    notes: list[str] = []
    for label, runs in groups.items():
        try:
            kept, said = one_per_seed(
                runs,
                run_seed,
                lambda r: (r.steps, r.values),
                lambda r: f"{r.name} ({r.run_id[:8]})",
                duplicates,
            )
        except DuplicateSeeds as exc:
            raise TrackingError(f"group '{label}': {exc}") from None
        out[label] = kept
        notes += [f"{label}: {n}" for n in said]
    return out, notes


def summarize_groups(
    groups: Mapping[str, Sequence[RunData]], band_kind: str = "std", window: int = 1
) -> list[GroupSummary]:
    """Final value (mean and band across seeds, read at the last frame every seed reached, after
    the same smoothing as the curve), best of the mean curve, that frame, mean env steps/s."""
    import numpy as np

    rows = []
    for label, runs in groups.items():
        grid, stack = align([(r.steps, r.values) for r in runs], window)
        mean, low, high = band(stack[:, -1:], band_kind)
        sps = [r.mean_steps_per_s for r in runs if r.mean_steps_per_s is not None]
        seeds = [s for s in (run_seed(r) for r in runs) if s is not None]
        rows.append(
            GroupSummary(
                group=label,
                n=len(runs),
                final_mean=float(mean[0]),
                final_low=float(low[0]),
                final_high=float(high[0]),
                band=band_kind,
                best=float(np.max(stack.mean(axis=0))),
                frames=float(grid[-1]),
                steps_per_s=float(np.mean(sps)) if sps else None,
                seeds=sorted(seeds, key=natural_key),
            )
        )
    return rows
