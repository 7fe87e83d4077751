"""`glamhpc doctor --container IMAGE`: run the image's validation recipe on this node.

The three commands of :mod:`glamhpc.containers.validate` (labels, entrypoint, a training smoke
run inside the image) are run with the engine this node has, each judged from its output; the
first failure stops the rest (a smoke run in an image whose entrypoint is broken says nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable

from glamhpc import containers
from glamhpc.containers.validate import judge, validation_steps
from glamhpc.launch.doctor import Check, Which

Runner = Callable[[list[str], float], tuple[int, str]]

FIXES = {
    "labels": "rebuild it with `glamhpc build` (it writes the labels), or check the image name",
    "entrypoint": "the image's glamhpc does not start: rebuild it with `glamhpc build`",
    "smoke": "see the output above; run the command yourself to read all of it",
}


def run_command(cmd: list[str], timeout_s: float) -> tuple[int, str]:
    """Exit code and combined output; a missing or hanging program is a failure, not a crash."""
    try:
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, done.stdout


def validate_image(
    image: str,
    *,
    which: Which = shutil.which,
    runner: Runner = run_command,
    announce: Callable[[str], None] = lambda _line: None,
) -> list[Check]:
    """One check per recipe step, in order, stopping at the first that fails."""
    try:  # GLAMHPC_CONTAINER_ENGINE picks one engine of the image's kind, as for jobs
        candidates = containers.run_candidates(image, os.environ)
    except containers.ContainerError as exc:
        return [Check("image validation", False, str(exc), f"unset {containers.ENGINE_VARIABLE}")]
    found = containers.find_engines(candidates, which)
    if not found:
        return [
            Check(
                "image validation",
                False,
                f"{image} needs {' or '.join(candidates)}, not on PATH",
                "`module load apptainer` (HPC) or install Docker/Podman, then run this again",
            )
        ]
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="glamhpc-validate-") as work:
        for step in validation_steps(image, found[0], work):
            announce(containers.format_command(step.argv))
            code, output = runner(step.argv, step.timeout_s)
            ok, detail = judge(step.name, code, output)
            checks.append(Check(f"image {step.name}", ok, detail, "" if ok else FIXES[step.name]))
            if not ok:
                break
    return checks
