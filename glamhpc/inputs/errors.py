"""``ConfigError`` and the one-line, bounded-length messages every user mistake is reported in."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

#: Longest error message: a pasted megabyte or a YAML alias bomb must not become the error.
MESSAGE_MAX = 300
#: Longest rendering of a bad value inside a message.
VALUE_MAX = 80


class ConfigError(ValueError):
    """A user mistake in a config file or override; the message says what and how to fix it."""


def cut(text: str, limit: int = MESSAGE_MAX) -> str:
    """``text`` on one line and at most ``limit`` characters (an ellipsis marks the cut)."""
    flat = " ".join(text.split("\n"))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def show(value: Any, limit: int = VALUE_MAX) -> str:
    """A value as a message shows it: repr (so a newline reads as \\n), cut to ``limit``.

    Containers are summarised before repr: a shared-reference structure can be tiny in memory
    and gigabytes as text.
    """
    if isinstance(value, Mapping):
        return "{...}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{len(value)} items]"
    text = repr(value) if not isinstance(value, (list, tuple)) else _short_seq(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_seq(value: list[Any] | tuple[Any, ...]) -> str:
    parts = [show(v, 20) if not isinstance(v, (list, tuple, Mapping)) else "[...]" for v in value]
    return f"[{', '.join(parts)}]"


def _allowed_for(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the section addressed by ``loc`` (for 'did you mean')."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return []
        annotation = current.model_fields[part].annotation
        current = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return sorted(current.model_fields) if current is not None else []


def format_error(
    error: Mapping[str, Any], model: type[BaseModel], removed: Mapping[str, str]
) -> str:
    """One pydantic error -> 'bad value for KEY: VALUE: what is allowed' (or a key hint)."""
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "<root>"
    kind = error["type"]
    if kind == "extra_forbidden":
        if key in removed:
            return f"'{key}' was removed: {removed[key]}"
        allowed = _allowed_for(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'? " if close else ""
        return f"unknown key '{cut(key, VALUE_MAX)}': {hint}allowed here: {', '.join(allowed)}"
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    ctx = error.get("ctx") or {}
    if kind == "literal_error" and "expected" in ctx:
        msg = f"allowed: {ctx['expected']}"
    return f"bad value for '{key}': {show(error.get('input'))}: {msg}"
