"""The stop request of a run: SIGUSR2 (Slurm's pre-timeout signal) or SIGTERM (preemption).

The handler only records the signal; the trainer polls it at safe points, where every rank
agrees on it through a collective, so all ranks stop after the same update.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType


class SignalFlag:
    """Set by SIGUSR2/SIGTERM; polled at safe points."""

    def __init__(self) -> None:
        self.received: int | None = None

    @contextmanager
    def installed(self) -> Iterator[SignalFlag]:
        previous = {}
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            # Outside the main thread (some test runners) signals cannot be installed.
            with suppress(ValueError):
                previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
