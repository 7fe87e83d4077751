"""The Dockerfile and the .def install the same pinned set as the project, the same way.

Both recipes run containers/install.sh; these tests check that they copy the same files, call it
with the same steps, default to the same base and labels, that constraints.txt pins everything
pyproject.toml depends on, and (with a stand-in Python that records pip's arguments) what
install.sh asks pip for, with and without torch in the base image.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from glamhpc import containers as c

from .conftest import ROOT, dockerfile_instructions

STEPS = dockerfile_instructions((ROOT / "Dockerfile").read_text())
DEF = c.parse_def((ROOT / c.DEF_FILE).read_text())
INSTALL = ROOT / "containers" / "install.sh"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    return pins


def _docker_copies() -> dict[str, str]:
    """COPY source -> absolute destination (relative destinations resolved by WORKDIR)."""
    workdir = "/"
    copies = {}
    for keyword, rest in STEPS:
        if keyword == "WORKDIR":
            workdir = rest
        elif keyword == "COPY":
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            *sources, dest = words
            for source in sources:
                base = dest if dest.startswith("/") else f"{workdir}/{dest}"
                if (ROOT / source).is_dir():
                    target = base  # Docker copies a folder's content into the destination
                elif base.endswith(("/", "/.")):
                    target = f"{base}/{Path(source).name}"
                else:
                    target = base
                copies[source.rstrip("/")] = os.path.normpath(target)
    return copies


def _def_copies() -> dict[str, str]:
    section = DEF.section("files")
    assert section is not None
    pairs = {}
    for line in section.body.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            source, dest = line.split()
            pairs[source] = dest
    return pairs


def _install_calls(script: str) -> list[tuple[str, str]]:
    """(mode, SRC) of every install.sh call in a shell snippet."""
    calls = re.findall(r"containers/install\.sh\"?\s+(deps|project)\s+(\S+)", script)
    return [(mode, src.strip('"')) for mode, src in calls]


def test_same_files_go_into_both_images() -> None:
    docker, apptainer = _docker_copies(), _def_copies()
    project_files = {"pyproject.toml", "constraints.txt", "README.md", "containers/install.sh"}
    assert project_files | {"glamhpc", c.BAKE_DIR} == set(docker) == set(apptainer)


def test_same_install_steps_in_the_same_order() -> None:
    docker_runs = " ; ".join(rest for keyword, rest in STEPS if keyword == "RUN")
    post = DEF.section("post")
    assert post is not None
    docker_calls = _install_calls(docker_runs)
    src_var = re.search(r"^\s*src=(\S+)", post.body, re.M)
    assert src_var is not None
    def_calls = [(m, src_var.group(1) if s == "$src" else s) for m, s in _install_calls(post.body)]
    assert [m for m, _ in docker_calls] == [m for m, _ in def_calls] == ["deps", "project"]
    # Each recipe points install.sh at the folder where it copied pyproject/constraints.
    for calls, copies in ((docker_calls, _docker_copies()), (def_calls, _def_copies())):
        for _, src in calls:
            assert copies["pyproject.toml"] == f"{src}/pyproject.toml"
            assert copies["constraints.txt"] == f"{src}/constraints.txt"
            assert copies["glamhpc"] == f"{src}/glamhpc"


def test_same_defaults_for_base_version_and_labels() -> None:
    docker_args = {}
    for keyword, rest in STEPS:
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            docker_args.setdefault(name, default.strip('"'))
    def_args = c.def_arguments((ROOT / c.DEF_FILE).read_text())
    assert def_args["FROM"] == docker_args["BASE_IMAGE"] == c.DEFAULT_BASE_IMAGE
    for key in ("VERSION", "REVISION", "SOURCE", "BAKED_MODEL"):
        assert def_args[key] == docker_args[key], key


def test_constraints_pin_every_runtime_dependency() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = _constraints()
    runtime = {_name(r) for r in pyproject["project"]["dependencies"]}
    assert runtime <= set(pins), f"unpinned: {sorted(runtime - set(pins))}"
    assert all(re.fullmatch(r"\d+(\.\d+)*", v) for v in pins.values())


# ----------------------------------------------------------------------------- install.sh

FAKE_PYTHON = r"""#!/bin/sh
# Stand-in for the image's python3: answers the torch probe from $STATE/torch, records pip
# calls (with the content of the constraints and requirements files they name) in $STATE/pip.
case "$1" in
-c)
    if [ -f "$STATE/torch" ]; then cat "$STATE/torch"; exit 0; fi
    exit 1 ;;
-)
    shift; exec "$REAL_PYTHON" - "$@" ;;
-m)
    if [ "$2" = glamhpc ]; then echo "glamhpc 0.1.0"; exit 0; fi
    shift 2
    echo "pip $*" >>"$STATE/pip"
    while [ $# -gt 0 ]; do
        case "$1" in -c|-r) sed "s/^/  $1 /" "$2" >>"$STATE/pip"; shift ;; esac
        shift
    done
    if [ -f "$STATE/torch_after_pip" ]; then cp "$STATE/torch_after_pip" "$STATE/torch"; fi ;;
esac
"""


def _install(tmp_path: Path, mode: str, torch: str | None, after: str | None = None):
    state = tmp_path / "state"
    state.mkdir()
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    if torch is not None:
        (state / "torch").write_text(torch + "\n")
    if after is not None:
        (state / "torch_after_pip").write_text(after + "\n")
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "STATE": str(state),
        "REAL_PYTHON": sys.executable,
    }
    result = subprocess.run(
        ["sh", str(INSTALL), mode, str(ROOT)], env=env, capture_output=True, text=True
    )
    log = (state / "pip").read_text() if (state / "pip").exists() else ""
    return result, log


def test_install_keeps_the_base_images_torch(tmp_path: Path) -> None:
    result, log = _install(tmp_path, "deps", torch="2.13.0+cu128")
    assert result.returncode == 0, result.stderr
    (command,) = [line for line in log.splitlines() if line.startswith("pip ")]
    assert "torch==" not in command  # no torch requirement: pip keeps the installed build
    constraints = [line[5:] for line in log.splitlines() if line.startswith("  -c ")]
    assert "torch==2.13.0+cu128" in constraints
    assert "torch==2.13.0" not in constraints
    pins = _constraints()
    for name, version in pins.items():
        if name != "torch":
            assert f"{name}=={version}" in constraints
    requirements = {_name(line[5:]) for line in log.splitlines() if line.startswith("  -r ")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert requirements == {_name(r) for r in pyproject["project"]["dependencies"]}
    assert result.stderr == ""


def test_install_without_torch_in_the_base_uses_the_project_pin(tmp_path: Path) -> None:
    result, log = _install(tmp_path, "deps", torch=None)
    assert result.returncode == 0, result.stderr
    (command,) = [line for line in log.splitlines() if line.startswith("pip ")]
    assert command.endswith("torch==2.13.0")  # named in the same pip command (STACK_NOTES)
    assert "  -c torch==2.13.0" in log


def test_install_warns_about_a_different_base_torch(tmp_path: Path) -> None:
    result, log = _install(tmp_path, "deps", torch="2.12.1+cu126")
    assert result.returncode == 0
    assert "base image has torch 2.12.1+cu126, the project pins 2.13.0" in result.stderr
    assert "  -c torch==2.12.1+cu126" in log


def test_install_fails_if_pip_replaced_torch(tmp_path: Path) -> None:
    result, _ = _install(tmp_path, "deps", torch="2.13.0+cu128", after="2.14.1")
    assert result.returncode == 1
    assert "pip replaced the base image's torch (2.13.0+cu128 -> 2.14.1)" in result.stderr


def test_install_project_adds_no_dependencies(tmp_path: Path) -> None:
    result, log = _install(tmp_path, "project", torch="2.13.0")
    assert result.returncode == 0, result.stderr
    assert log.splitlines()[0].endswith(f"--no-deps {ROOT}")
    assert "glamhpc 0.1.0" in result.stdout


@pytest.mark.parametrize("mode", ["", "everything"])
def test_install_usage_errors(tmp_path: Path, mode: str) -> None:
    result, _ = _install(tmp_path, mode, torch=None)
    assert result.returncode != 0
    assert "usage: install.sh" in result.stderr


def test_install_script_is_shellcheck_clean() -> None:
    shellcheck = c.find_shellcheck()
    assert shellcheck is not None
    result = subprocess.run([shellcheck, str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
