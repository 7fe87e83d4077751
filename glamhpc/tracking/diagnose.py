"""What a failed tracking call most likely means, and what a sender says about it.

The sender warns once per outage and per cause; this module turns the exception (a refused
connection, a timeout, an HTTP error whose body is a server-side SQLAlchemy message) into that
cause. Under load the server's answer is often an HTTP 400 carrying a database error, which
MLflow's client reports as a long message: without this, the cause is invisible in a job log.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from glamhpc.tracking.uri import short_error

log = logging.getLogger("glamhpc.tracking")

# (substrings of the error, cause and fix). First match wins; compared in lower case. HTTP
# statuses are matched with their context ("error code 401"): bare digits occur in run ids.
_CAUSES: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("queuepool limit", "connection timed out, timeout", "too many clients"),
        "the tracking server ran out of database connections (more concurrent writers than its "
        "connection pool): restart it with `glamhpc tracking-server --workers N` sized for the "
        "sweep, or use --backend postgres (docs/TRACKING.md)",
    ),
    (
        ("database is locked",),
        "the SQLite store is locked by concurrent writers: let one `glamhpc tracking-server` own "
        "the file (never many jobs on one SQLite file), or use --backend postgres",
    ),
    (
        ("error code 401", "error code 403", "unauthorized", "forbidden"),
        "the server refused the credentials: set MLFLOW_TRACKING_USERNAME / "
        "MLFLOW_TRACKING_PASSWORD for the jobs",
    ),
    (
        ("resource_does_not_exist",),
        "the run does not exist on this server (another tracking URI, or a reset store)",
    ),
    (
        ("read timed out", "timeout", "timed out"),
        "the server did not answer in time (overloaded: too many writers for its workers, or "
        "a slow database)",
    ),
    (
        ("too many 500 error", "too many 502 error", "too many 503 error", "too many 504 error"),
        "the server answered with errors (HTTP 5xx: overloaded, or its database failing; its "
        "log names the error, e.g. a locked SQLite store: use --backend postgres for sweeps)",
    ),
    (
        ("connection refused", "max retries exceeded", "connectionerror", "failed to establish"),
        "the server is not reachable (down, restarting, or a wrong tracking URI)",
    ),
    (
        (
            "error code 5",
            "server error",
            "temporarily_unavailable",
            "internal_error",
        ),
        "the server failed while handling the request (its log names the error)",
    ),
)


def likely_cause(exc: BaseException) -> str:
    """One phrase naming the likely cause and the fix, or "" when nothing is recognised."""
    text = f"{type(exc).__name__} {exc}".lower()
    for needles, cause in _CAUSES:
        if any(n in text for n in needles):
            return cause
    return ""


def describe(exc: BaseException) -> str:
    """``short error (likely cause: ...)`` on one line."""
    cause = likely_cause(exc)
    short = short_error(exc)
    return f"{short}; likely cause: {cause}" if cause else short


class Outage:
    """A sender's view of the server's health: backoff delays and the few lines it prints.

    Messages say what is true: one warning per outage and cause (a retry loop must not flood a
    job log), "answers again; N points pending, delivering" when the server replies, and
    "backlog delivered" only once everything journaled has been acknowledged.
    """

    base_s = 0.5
    """First retry delay after a failure (doubling up to ``max_s``, jittered)."""

    def __init__(self, uri: str, journal: Path, max_s: float) -> None:
        self.uri = uri
        self.journal = journal
        self.max_s = max(0.1, float(max_s))
        self.failures = 0
        self.next_try = 0.0
        self.active = False
        """A failure happened and not everything was delivered since."""
        self.last_error: str | None = None
        self._rng = random.Random()
        self._warned: set[str] = set()
        self._said_reachable = False

    def backoff(self) -> float:
        """Exponential in the failures, capped, half of it random (equal jitter): the writers
        of a sweep, failed together by one outage, come back spread over the interval."""
        ceiling = min(self.max_s, self.base_s * 2 ** min(max(self.failures, 1) - 1, 16))
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.active = True
        self._said_reachable = False
        self.next_try = time.monotonic() + self.backoff()
        self.last_error = describe(exc)
        cause = likely_cause(exc) or short_error(exc)
        if cause not in self._warned:
            self._warned.add(cause)
            log.warning(
                "MLflow tracking at %s failed (%s); training continues, metrics are journaled "
                "in %s and sent when it is back",
                self.uri,
                self.last_error,
                self.journal,
            )

    def busy(self) -> None:
        """Another sender of the run still has a request in flight: wait like after a failure."""
        self.failures = max(1, self.failures)
        self.next_try = time.monotonic() + self.backoff()

    def reachable(self, pending_points: Callable[[], int]) -> None:
        """The server answered a read: announce the backlog once per outage."""
        if self.active and not self._said_reachable:
            self._said_reachable = True
            log.warning(
                "MLflow tracking at %s answers again; %d points pending, delivering",
                self.uri,
                pending_points(),
            )

    def delivered(self, offset: int) -> None:
        """Everything journaled so far is acknowledged."""
        if self.active:
            log.warning(
                "MLflow tracking at %s: backlog delivered (journal acknowledged up to byte %d)",
                self.uri,
                offset,
            )
        self.active = False
        self._warned.clear()
        self._said_reachable = False
        self.failures = 0
        self.last_error = None
