"""Shared helpers of the stand-in container engines in this folder (tests only).

Apptainer cannot be installed on the CI machines and no registry is reachable, so the tests put
these stand-ins first on PATH. They behave like the real engines at the boundary glamhpc relies
on: they record their arguments (one JSON line per call, to the file named by
GLAMHPC_STANDIN_LOG), reject what the real engine rejects for the options glamhpc uses, apply
the environment rules (--cleanenv, -e) and exec the inner command on the host.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path


def record(engine: str, argv: list[str]) -> None:
    """Append this call to the log named by GLAMHPC_STANDIN_LOG (if set)."""
    log = os.environ.get("GLAMHPC_STANDIN_LOG")
    if not log:
        return
    entry = {"engine": engine, "argv": argv, "cwd": os.getcwd(), "pid": os.getpid()}
    # O_APPEND keeps lines whole when several ranks call the stand-in at once.
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def state_dir() -> Path:
    """Where built 'images' are kept between calls (GLAMHPC_STANDIN_STATE or a temp folder)."""
    folder = os.environ.get("GLAMHPC_STANDIN_STATE") or os.path.join(
        tempfile.gettempdir(), f"glamhpc-standin-{os.getuid()}"
    )
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def die(message: str, code: int = 255) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def exec_inner(argv: list[str], env: dict[str, str], workdir: str | None) -> None:
    """Replace this process by the inner command, like the container's init does."""
    if workdir:
        os.chdir(workdir)
    sys.stdout.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        die(f"standin: {argv[0]}: executable file not found in $PATH", 127)
