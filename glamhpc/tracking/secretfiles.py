"""Secret files of the tracking server (database passwords, basic-auth credentials).

Secrets never go on a command line (``ps`` and the process table show argv to every user): they
live in 0600 files inside a 0700 folder and reach child processes through the environment or a
file path (PGPASSFILE, MLFLOW_AUTH_CONFIG_PATH).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import IO

from glamhpc.fsutil import atomic_write_text
from glamhpc.tracking.uri import TrackingError


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) and force ``mode`` on it: the secrets' folder."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


def new_password() -> str:
    # token_urlsafe: no ':' or '\\', which would need escaping in a pgpass line.
    return secrets.token_urlsafe(32)


def write_secret(path: Path, text: str) -> None:
    """Write atomically, 0600. The folder is 0700 already, so the temporary file is never
    readable by anyone else either."""
    private_dir(path.parent)
    atomic_write_text(path, text)
    os.chmod(path, 0o600)


def check_private(path: Path) -> None:
    """A secret file someone else can read or write is refused, with the fix."""
    st = path.stat()
    if st.st_uid != os.getuid():
        raise TrackingError(f"{path} belongs to uid {st.st_uid}, not to you; use your own file")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise TrackingError(
            f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run `chmod 600 {path}`"
        )


def read_secret(path: Path) -> str:
    check_private(path)
    return path.read_text()


def open_log(path: Path) -> IO[bytes]:
    """A server log for appending, 0600 when created: a failed request's cause may quote what
    a user sent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "ab")
