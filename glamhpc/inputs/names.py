"""The name rule (run, sweep, experiment and config names) and the batch-script string rules.

A name becomes one path component under the run root and part of a Slurm job name, so it is
plain: ASCII letters, digits, ``_``, ``-`` and ``.``, neither ``.`` first (no ``..``, no hidden
folders) nor ``-`` first (never read as an option), bounded length. Strings that reach an
``#SBATCH`` line must hold no control character: a newline would end the line and the rest
would run as shell on the compute node.
"""

from __future__ import annotations

import re
import unicodedata

from glamhpc.inputs.errors import ConfigError, show

#: Longest run name (a path component: filesystems allow 255 bytes).
NAME_MAX = 200
#: Longest config, experiment or sweep name: run names are derived from them
#: (``<name>-s<seed>-<stamp>``, ``<sweep>-<index>``) and must stay within NAME_MAX.
BASE_NAME_MAX = 120

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", re.ASCII)
NAME_RULE = "use letters, digits, '_', '-' and '.', not '.' or '-' first"

#: sbatch long options (`--mail-type`); submitit writes `_` as `-`.
_SBATCH_KEY = re.compile(r"[a-z][a-z0-9_-]{0,63}", re.ASCII)


def name_problem(name: str, limit: int = NAME_MAX) -> str | None:
    """What is wrong with ``name`` as a run/sweep/experiment name; None when it is fine."""
    if not name:
        return "a name cannot be empty"
    if len(name) > limit:
        return f"at most {limit} characters, got {len(name)}"
    if not _NAME.fullmatch(name):
        return f"{NAME_RULE} (it becomes a folder and a Slurm job name)"
    return None


def check_name(name: str, what: str = "run name", limit: int = NAME_MAX) -> str:
    """``name`` if it follows the name rule; else ConfigError naming ``what`` and the rule."""
    problem = name_problem(name, limit)
    if problem:
        raise ConfigError(f"bad {what} {show(name)}: {problem}")
    return name


def control_problem(text: str) -> str | None:
    """Why ``text`` cannot go into a batch script (a control or line-separator character)."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return (
                f"control character {char!r} not allowed (it would end the #SBATCH line "
                "and run the rest as shell)"
            )
    return None


def check_batch_text(text: str, what: str) -> str:
    problem = control_problem(text)
    if problem:
        raise ConfigError(f"bad {what} {show(text)}: {problem}")
    return text


def sbatch_key_problem(key: str) -> str | None:
    """Why ``key`` is not an sbatch long option name (launch.extra_sbatch keys)."""
    if _SBATCH_KEY.fullmatch(key):
        return None
    return (
        f"bad sbatch option {show(key)}: use the long option's name without dashes, "
        "lower case letters, digits and '-' (e.g. mail-type)"
    )
