"""One tracker (or `glamhpc sync`) per run directory: ``flock`` on logs/tracking.lock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from glamhpc.tracking.uri import TrackingError


class RunDirLock:
    """Two senders on one journal would race on the ack file, hence one holder per run directory.

    The kernel drops the lock when the holder dies, so a crashed job never blocks its requeued
    successor. Filesystems without ``flock`` (some NFS setups) are tolerated: the lock is then
    advisory only.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "logs" / "tracking.lock"
        self._fh: TextIO | None = None

    def acquire(self) -> RunDirLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise TrackingError(
                f"{self.path.parent.parent} is being tracked by another process ({holder}); "
                f"it delivers its own journal, wait for it to end"
            ) from None
        except OSError:
            pass  # no flock on this filesystem
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
