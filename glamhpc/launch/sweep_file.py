"""Sweep files: parse and check one, and expand it into numbered elements (pure, no jobs).

Sweep file::

    name: lr-x-epochs            # sweep name: MLflow parent run, Slurm job name, run-name prefix
    experiment: lr-study         # MLflow experiment (and runs/<experiment>/); default: the name
    base: ../quickstart.yaml     # base config, relative to this file (optional)
    set:                         # overrides applied to every element (optional)
      - train.max_updates=50
    grid:                        # cartesian product of these lists
      ppo.lr: [1.0e-4, 5.0e-4]
    zip:                         # lists of equal length advanced together (one element per row)
      ppo.epochs: [2, 4]
      ppo.minibatch_size: [64, 128]
    seeds: [1, 2]                # each combination once per seed (sets the config's `seed`)
    max_parallel: 4              # array elements running at once (--max-parallel overrides)

Elements = grid x zip rows x seeds, in that nesting order. Every element is a complete run with
its own run directory (``<sweep>-<index>``) and MLflow child run under one parent run
(glamhpc.launch.sweep plans and submits them).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glamhpc.config import Config, ConfigError, config_from_dict, parse_override, read_yaml
from glamhpc.inputs.errors import show
from glamhpc.inputs.names import BASE_NAME_MAX, check_name

_SWEEP_KEYS = {"name", "experiment", "base", "set", "grid", "zip", "seeds", "max_parallel"}

#: Most elements a sweep may have unless `glamhpc sweep --max-size` says otherwise: a typo in a
#: grid (one list too many) should not become thousands of jobs and run directories.
MAX_SWEEP_SIZE = 1024


@dataclass
class SweepSpec:
    """A parsed sweep file (see the module docstring)."""

    name: str
    base: Path | None = None
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    zipped: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    max_parallel: int | None = None
    experiment: str | None = None
    """The sweep's own MLflow experiment (`experiment:` key or --experiment); None: see
    ``sweep_experiment``."""


def with_experiment(spec: SweepSpec, experiment: str) -> SweepSpec:
    """``spec`` logging to ``experiment`` (`sweep --experiment`)."""
    check_name(experiment, "--experiment", BASE_NAME_MAX)
    return dataclasses.replace(spec, experiment=experiment)


def sweep_experiment(spec: SweepSpec) -> str | None:
    """The experiment a sweep logs to: the explicit one, else the one its ``set:`` names, else
    None, meaning the sweep's name: a sweep gets its own experiment, so the experiment view and
    `glamhpc report EXPERIMENT` never mix its children with one-off runs of the base config."""
    if spec.experiment:
        return spec.experiment
    for text in spec.overrides:
        key = text.split("=", 1)[0].strip()
        if key in ("tracking.experiment", "name"):
            return None  # the overrides decide (applied to the base config as they are)
    return spec.name


@dataclass(frozen=True)
class Element:
    """One array element: its index and the values it sets (dotted key -> value)."""

    index: int
    values: dict[str, Any]

    def label(self) -> str:
        return " ".join(f"{k}={json.dumps(v)}" for k, v in self.values.items())


def _lists(section: Any, what: str, path: Path) -> dict[str, list[Any]]:
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{path}: '{what}' must map dotted keys to lists of values")
    out: dict[str, list[Any]] = {}
    for key, values in section.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{path}: {what}.{show(key)} must be a non-empty list, got {show(values)}"
            )
        out[str(key)] = values
    return out


def load_sweep(path: str | Path, name: str | None = None) -> SweepSpec:
    """Read and check a sweep file (errors name the file and the key)."""
    path = Path(path)
    data = read_yaml(path, "sweep file")
    unknown = set(data) - _SWEEP_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {show(sorted(map(str, unknown)))}; allowed: "
            + ", ".join(sorted(_SWEEP_KEYS))
        )
    base = data.get("base")
    base_path = (path.parent / str(base)).resolve() if base else None
    if base_path is not None and not base_path.is_file():
        raise ConfigError(f"{path}: base config not found: {base_path}")
    overrides = data.get("set") or []
    if isinstance(overrides, str) or not isinstance(overrides, list):
        raise ConfigError(f"{path}: 'set' must be a list of KEY=VALUE strings")
    grid = _lists(data.get("grid"), "grid", path)
    zipped = _lists(data.get("zip"), "zip", path)
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in zipped.items())
        raise ConfigError(f"{path}: 'zip' lists must have the same length ({sizes})")
    seeds = data.get("seeds") or []
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{path}: 'seeds' must be a list of integers, got {show(seeds)}")
    both = (set(grid) & set(zipped)) | ({"seed"} & (set(grid) | set(zipped)) if seeds else set())
    if both:
        raise ConfigError(f"{path}: {', '.join(sorted(both))} set twice (grid/zip/seeds)")
    max_parallel = data.get("max_parallel")
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise ConfigError(f"{path}: max_parallel must be a positive integer")
    sweep_name = name or data.get("name") or path.stem
    # The one name rule: the sweep names a folder, a job and (with an index) its runs.
    check_name(str(sweep_name), "sweep name", BASE_NAME_MAX)
    experiment = data.get("experiment")
    if experiment is not None:
        check_name(str(experiment), f"{path}: experiment", BASE_NAME_MAX)
    return SweepSpec(
        name=str(sweep_name),
        base=base_path,
        overrides=[str(o) for o in overrides],
        grid=grid,
        zipped=zipped,
        seeds=list(seeds),
        max_parallel=max_parallel,
        experiment=None if experiment is None else str(experiment),
    )


def with_overrides(spec: SweepSpec, overrides: list[str]) -> SweepSpec:
    """``spec`` with command-line ``--set`` overrides applied after the file's ``set:`` (to every
    element). One that names a key the sweep varies is refused: the element's value would win
    and the override would silently do nothing."""
    varied = set(spec.grid) | set(spec.zipped) | ({"seed"} if spec.seeds else set())
    for text in overrides:
        key = ".".join(parse_override(text)[0])
        clash = [
            v for v in varied if v == key or v.startswith(key + ".") or key.startswith(v + ".")
        ]
        if clash:
            raise ConfigError(
                f"--set {text}: sweep {spec.name} varies {', '.join(sorted(clash))} "
                "(grid/zip/seeds), so this override would never apply; edit the sweep file instead"
            )
    return dataclasses.replace(spec, overrides=[*spec.overrides, *overrides])


def sweep_size(spec: SweepSpec) -> int:
    """How many elements ``spec`` expands to (counted, not enumerated)."""
    rows = len(next(iter(spec.zipped.values()))) if spec.zipped else 1
    return math.prod(len(v) for v in spec.grid.values()) * rows * max(1, len(spec.seeds))


def expand(spec: SweepSpec, max_size: int = MAX_SWEEP_SIZE) -> list[Element]:
    """grid (cartesian, keys in file order) x zip rows x seeds -> numbered elements (pure).

    Refuses more than ``max_size`` elements before enumerating any.
    """
    size = sweep_size(spec)
    if size > max_size:
        raise ConfigError(
            f"sweep {spec.name} has {size:,} elements, more than {max_size:,}: shrink its "
            f"grid, or pass --max-size {size} if you mean it"
        )
    grid_rows: list[dict[str, Any]] = [
        dict(zip(spec.grid, combo, strict=True)) for combo in itertools.product(*spec.grid.values())
    ]
    zip_rows: list[dict[str, Any]] = (
        [
            dict(zip(spec.zipped, row, strict=True))
            for row in zip(*spec.zipped.values(), strict=True)
        ]
        if spec.zipped
        else [{}]
    )
    seed_rows: list[dict[str, Any]] = [{"seed": s} for s in spec.seeds] or [{}]
    elements: list[Element] = []
    for g, z, s in itertools.product(grid_rows, zip_rows, seed_rows):
        elements.append(Element(len(elements), {**g, **z, **s}))
    return elements


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"sweep key '{dotted}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def element_config(base: Mapping[str, Any], element: Element) -> Config:
    """``base`` (a config as a dict) with the element's values set; errors name the element."""
    data = copy.deepcopy(dict(base))
    for key, value in element.values.items():
        _set_path(data, key, value)
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"sweep element {element.index} ({element.label()}): {exc}") from None
