"""Reading YAML that a user wrote: safe types, no sexagesimal ints, bounded size and aliases.

``yaml.safe_load`` already refuses code; what is left is size. A file is capped in bytes, and
aliases are counted as they would expand: a 505-byte "billion laughs" loads cheaply (PyYAML
shares the references) but anything that walks or prints it (pydantic, an error message) then
handles hundreds of millions of values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from glamhpc.inputs.errors import ConfigError, cut

#: Largest config or sweep file read (they are a few KB).
FILE_MAX_BYTES = 1 << 20
#: Most values a document may hold once every alias is expanded.
EXPANDED_MAX = 100_000


class _Loader(yaml.SafeLoader):
    """YAML 1.1 without base-60 integers: `time: 04:00:00` must stay a string, not 14400."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)


class AliasBombError(yaml.YAMLError):
    """The document expands (through aliases) to more than EXPANDED_MAX values."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _expanded_size(root: yaml.Node) -> int:
    """Values in the document with every alias expanded, capped at EXPANDED_MAX + 1. Shared
    nodes are counted once per use but visited once (memoised); iterative, so a deep document
    cannot exhaust Python's stack here."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[key] = min(total, EXPANDED_MAX + 1)
            open_nodes.discard(key)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise AliasBombError("an alias refers to its own anchor (a recursive structure)")
        children = _children(node)
        if not children:
            sizes[key] = 1
            continue
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children)
    return sizes[id(root)]


def yaml_load(text: str) -> Any:
    """safe_load with glamhpc's loader (no sexagesimal ints), refusing alias bombs."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > EXPANDED_MAX:
            raise AliasBombError(
                f"its aliases expand to more than {EXPANDED_MAX:,} values; write the values out"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_text(path: Path, what: str = "config file") -> str:
    """A small UTF-8 text file, or ConfigError saying why not (one line)."""
    if not path.is_file():
        raise ConfigError(
            f"{what} not found: {path} (pass a YAML file, e.g. configs/quickstart.yaml)"
        )
    try:
        size = path.stat().st_size
        if size > FILE_MAX_BYTES:
            raise ConfigError(
                f"{path}: {size:,} bytes is too large for a {what} (at most {FILE_MAX_BYTES:,})"
            )
        data = path.read_bytes()[: FILE_MAX_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None


def read_yaml(path: str | os.PathLike[str], what: str = "config file") -> dict[str, Any]:
    """Read a YAML mapping with a one-line error for a missing, unreadable or malformed file."""
    p = Path(path)
    text = read_text(p, what)
    try:
        data = yaml_load(text) or {}
    except AliasBombError as exc:
        raise ConfigError(f"{p}: refused: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(cut(f"{p}:{where} is not valid YAML: {problem}")) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of sections, got {type(data).__name__}"
        )
    return data
