"""The numbers of a report, as pure functions: curves aligned on common frames, the band across
seeds (std or a seeded 95 % bootstrap interval of the mean), one run per distinct seed.

No MLflow and no plotting here: everything is tested on plain lists (tests/report/test_stats.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from glamhpc.ui.plots import Curve

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]

BANDS = ("std", "ci95", "minmax")
"""`--band` choices: mean ± std across seeds, 95 % bootstrap interval of the mean, min-max."""
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
"""The bootstrap is seeded: the same runs give the same interval, report after report."""

T = TypeVar("T")


class DuplicateSeeds(ValueError):
    """Different runs with the same seed in one group (the message names them)."""


def bootstrap_mean_ci(
    samples: Sequence[float] | FloatArray,
    level: float = 0.95,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``samples`` (one value per seed)."""
    import numpy as np

    values = np.asarray(samples, float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("need at least one value")
    low, high = bootstrap_band(values[:, None], level, n_boot, seed)
    return float(low[0]), float(high[0])


def bootstrap_band(
    stack: FloatArray,
    level: float = 0.95,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[FloatArray, FloatArray]:
    """Per column of ``stack[seed, frame]``: the percentile bootstrap interval of the mean across
    seeds. Seeds are resampled as whole curves (one draw serves every frame), so the band is the
    interval of the mean curve, not of independent points. One seed: a zero-width band."""
    import numpy as np

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = stack.shape[0]
    if n < 2:
        return stack.mean(axis=0), stack.mean(axis=0)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    means = stack[draws].mean(axis=1)  # [n_boot, frame]
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return low, high


def band(stack: FloatArray, kind: str) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(mean, low, high) across seeds (rows) for a band ``kind`` in BANDS."""
    import numpy as np

    mean = stack.mean(axis=0)
    if kind == "std":
        std = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.zeros_like(mean)
        return mean, mean - std, mean + std
    if kind == "ci95":
        low, high = bootstrap_band(stack)
        return mean, low, high
    if kind == "minmax":
        return mean, stack.min(axis=0), stack.max(axis=0)
    raise ValueError(f"band must be one of {', '.join(BANDS)}, got '{kind}'")


def one_per_seed(
    runs: Sequence[T],
    seed_of: Callable[[T], str | None],
    curve_of: Callable[[T], Curve],
    name_of: Callable[[T], str],
    duplicates: str = "refuse",
) -> tuple[list[T], list[str]]:
    """Keep one run per distinct seed, in the given order (newest first when it comes from
    MLflow). Runs with the same seed AND the same curve are one result logged twice: collapsed
    (a note says so). Same seed, different curves: refused (``duplicates='refuse'``, the error
    names the runs) or the first one kept (``'newest'``). A run without a known seed is its own
    seed: counting it once is all that can be said of it."""
    if duplicates not in ("refuse", "newest"):
        raise ValueError(f"duplicates must be 'refuse' or 'newest', got '{duplicates}'")
    kept: list[T] = []
    by_seed: dict[str, T] = {}
    notes: list[str] = []
    for run in runs:
        seed = seed_of(run)
        if seed is None:
            kept.append(run)
            continue
        first = by_seed.get(seed)
        if first is None:
            by_seed[seed] = run
            kept.append(run)
            continue
        if _same_curve(curve_of(first), curve_of(run)):
            notes.append(
                f"{name_of(run)} repeats {name_of(first)} (seed {seed}, identical curve): "
                "counted once"
            )
        elif duplicates == "newest":
            notes.append(f"{name_of(run)} has seed {seed} like {name_of(first)}: kept the newer")
        else:
            raise DuplicateSeeds(
                f"{name_of(first)} and {name_of(run)} both have seed {seed} but different "
                f"curves; they are not two seeds: separate them with --group-by (e.g. a param "
                f"that differs), or pass --duplicates newest to keep the newer run"
            )
    return kept, notes


def _same_curve(a: Curve, b: Curve) -> bool:
    return list(a[0]) == list(b[0]) and list(a[1]) == list(b[1])
