"""Validating a built image on the machine that will run it: three commands and what they must say.

A site builds (or pulls) the image once and should check it before submitting to it: the labels
say which glamhpc and which commit it holds, the entrypoint answers, and a real training smoke
run (``glamhpc train --smoke``: the embedded quickstart, two updates, the LLM moved, weights
finite, resume bit-exact) passes inside it. ``validation_steps`` gives the commands (pure; the
same three for Apptainer, Docker and Podman, spelled for each), ``judge`` reads their output
(pure), and ``glamhpc doctor --container IMAGE`` runs them. docs/CONTAINERS.md shows the output
to compare with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from glamhpc.containers.layout import APPTAINER_LIKE

VERSION_LABEL = "org.opencontainers.image.version"
REVISION_LABEL = "org.opencontainers.image.revision"
SMOKE_PASS = ("finite=1", "resume_exact=1")


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    timeout_s: float


def validation_steps(image: str, engine: str, workdir: str) -> list[Step]:
    """The three commands for ``image`` under ``engine``; ``workdir`` is a scratch folder the
    Apptainer smoke run writes to (Docker/Podman images write to their own /workspace)."""
    if engine in APPTAINER_LIKE:
        return [
            Step("labels", [engine, "inspect", "--json", "--labels", image], 60),
            Step("entrypoint", [engine, "run", "--cleanenv", image, "--version"], 120),
            Step(
                "smoke",
                [
                    engine,
                    "exec",
                    "--cleanenv",
                    "--bind",
                    workdir,
                    "--pwd",
                    workdir,
                    image,
                    "glamhpc",
                    "train",
                    "--smoke",
                    "--set",
                    f"train.run_root={workdir}/runs",
                ],
                1800,
            ),
        ]
    return [
        Step(
            "labels", [engine, "image", "inspect", "--format", "{{json .Config.Labels}}", image], 60
        ),
        Step("entrypoint", [engine, "run", "--rm", image, "--version"], 120),
        Step(
            "smoke", [engine, "run", "--rm", "--network", "none", image, "train", "--smoke"], 1800
        ),
    ]


def _labels(output: str) -> dict[str, str]:
    """Labels from `docker image inspect --format {{json .Config.Labels}}` or `apptainer inspect
    --json --labels` (``{"data": {"attributes": {"labels": {...}}}}``)."""
    try:
        data = json.loads(output.strip().splitlines()[-1] if output.strip() else "{}")
    except json.JSONDecodeError:
        try:
            data = json.loads(output)
        except json.JSONDecodeError:
            return {}
    if isinstance(data, dict) and "data" in data:
        data = data.get("data", {}).get("attributes", {}).get("labels", {})
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def judge(step: str, returncode: int, output: str) -> tuple[bool, str]:
    """(passed, what to show) for one step's exit code and output."""
    tail = output.strip().splitlines()[-1] if output.strip() else "(no output)"
    if returncode != 0:
        return False, f"exit {returncode}: {tail[:200]}"
    if step == "labels":
        labels = _labels(output)
        if VERSION_LABEL not in labels:
            return False, f"no {VERSION_LABEL} label: not an image `glamhpc build` made"
        revision = labels.get(REVISION_LABEL, "unknown")
        return True, f"glamhpc {labels[VERSION_LABEL]}, commit {revision[:12]}"
    if step == "entrypoint":
        ok = re.fullmatch(r"glamhpc \S+", tail) is not None
        return ok, tail if ok else f"unexpected answer: {tail[:200]}"
    result = [line for line in output.splitlines() if line.startswith("RESULT smoke")]
    if not result:
        return False, f"no RESULT line; last line: {tail[:200]}"
    ok = all(part in result[-1].split() for part in SMOKE_PASS)
    return ok, result[-1]
