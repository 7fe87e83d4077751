"""Config and sweep files (issue 12): non-UTF-8 bytes, YAML alias bombs and oversized files give
one short error line (exit 2), no traceback, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from glamhpc.config import ConfigError, read_yaml

from .one_line import fails_with_one_line, sandbox, tree

__all__ = ["sandbox"]

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")

#: The classic "billion laughs": 9 levels of 9 aliases, 9**9 (387 million) strings once expanded,
#: placed under a key whose bad value an error message would print.
BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)

BAD_FILES = {
    "latin1": "name: caf\xe9\n".encode("latin-1"),
    "utf16": "name: quickstart\n".encode("utf-16"),
    "binary": bytes(range(256)) * 4,
    "bomb": (BOMB + "name: *i\n").encode(),
    "bomb-in-list": (BOMB + "model: {lora: {target_modules: *i}}\n").encode(),
    "huge": b"name: quickstart\n" + b"# padding\n" * 300_000,
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_read_yaml_gives_one_short_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(BAD_FILES[kind])
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and len(message) <= 400


def test_a_few_aliases_still_work(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("x: &v [1, 2]\ny: *v\nz: *v\n")
    assert read_yaml(path) == {"x": [1, 2], "y": [1, 2], "z": [1, 2]}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("command", ["train", "config", "submit", "sweep"])
def test_every_command_refuses_a_bad_file_in_one_line(
    sandbox: Path, kind: str, command: str
) -> None:
    tmp = sandbox.parents[2]
    path = tmp / f"{kind}.yaml"
    path.write_bytes(BAD_FILES[kind])
    before = tree(tmp)
    extra = ["--dry-run"] if command in ("submit", "sweep") else []
    line = fails_with_one_line(command, str(path), *extra)
    assert str(path) in line
    assert tree(tmp) == before


@pytest.mark.parametrize("kind", ["latin1", "bomb"])
def test_a_sweep_whose_base_is_bad(sandbox: Path, kind: str) -> None:
    tmp = sandbox.parents[2]
    base = tmp / "base.yaml"
    base.write_bytes(BAD_FILES[kind])
    sweep = tmp / "sweep.yaml"
    sweep.write_text("name: s\nbase: base.yaml\nseeds: [1, 2]\n")
    before = tree(tmp)
    line = fails_with_one_line("sweep", str(sweep), "--dry-run")
    assert str(base) in line
    assert tree(tmp) == before


def test_override_values_cannot_smuggle_aliases() -> None:
    from glamhpc.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(None, ["name=" + "x" * 100_000])
    assert len(str(info.value)) <= 300
