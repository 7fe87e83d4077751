"""Dotted ``KEY=VALUE`` overrides and dotted flattening of nested config dicts (pure)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from glamhpc.inputs.errors import ConfigError, show
from glamhpc.inputs.names import control_problem
from glamhpc.inputs.yamlfile import yaml_load


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (["a", "b"], parsed c). The value is parsed as YAML (1e-4, true, [1,2])."""
    if "=" not in text:
        raise ConfigError(f"bad override '{text}': expected KEY=VALUE, e.g. env.num_envs=32")
    key, raw = text.split("=", 1)
    key = key.strip()
    if control_problem(text):
        # YAML would quietly drop what follows a newline ("x\n#..." reads as "x").
        raise ConfigError(f"bad override {show(text)}: {control_problem(text)}")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override '{text}': empty key part; expected e.g. ppo.lr=1e-4")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        # YAML 1.1 reads "1e-4" as a string; users mean a number.
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value for c in ".eE") else int(value)
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with the dotted overrides applied (pure)."""
    result = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ConfigError(f"bad override '{text}': '{where}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (for MLflow params and tables)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
