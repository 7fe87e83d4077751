"""A real ``mlflow server`` as a managed child: `glamhpc tracking-server`, tests, benchmarks.

Started in its own session (process group) with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``:
the server's background job runner spawns worker processes that are not its direct children
(5x slower logging on 2 cores, STACK_NOTES), and stopping the whole group is the only way to
stop uvicorn's workers too.

Database pool (issue 17): each uvicorn worker runs the Flask app in anyio's thread pool (40
threads), and a ``log_batch`` request holds one SQLAlchemy session while ``_log_metrics`` opens
a second. With SQLAlchemy's default pool (5 + 10) 15 concurrent writers exhausted it and every
request then waited 30 s and failed. ``pool_env`` sizes the pool so that every thread of a worker
can hold two connections (PostgreSQL), or turns pooling off (SQLite: a connection is a file
open, and the file lock, not the pool, serialises writers).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from glamhpc.tracking.secretfiles import open_log
from glamhpc.tracking.uri import TrackingError, normalize_uri

SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
THREADS_PER_WORKER = 40
"""anyio's default thread limiter: concurrent Flask requests per uvicorn worker."""
CONNECTIONS_PER_REQUEST = 2
"""``SqlAlchemyStore.log_batch`` holds one session while ``_log_metrics`` opens another."""
DEFAULT_WRITERS = 128
LOG_CONFIG = Path(__file__).resolve().parents[1] / "data" / "uvicorn_log_config.yaml"


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def connections_per_worker(writers: int) -> int:
    """Peak connections one worker may need: every request in flight (at most one per writer,
    at most one per thread, and in the worst case all on this worker) x 2, plus the UI's."""
    return CONNECTIONS_PER_REQUEST * min(THREADS_PER_WORKER, max(1, writers)) + 4


def pool_env(backend_store_uri: str, writers: int = DEFAULT_WRITERS) -> dict[str, str]:
    """MLflow's SQLAlchemy pool settings (MLFLOW_SQLALCHEMYSTORE_*, read by
    ``mlflow.store.db.utils.create_sqlalchemy_engine`` in every worker)."""
    if backend_store_uri.startswith("sqlite"):
        return {"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}
    need = connections_per_worker(writers)
    size = min(need, 10)  # kept open while idle; the rest opens under load and closes after
    return {
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(size),
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(need - size),
    }


def check_host(host: str) -> None:
    """One line for addresses the server cannot use (instead of uvicorn's traceback)."""
    if ":" in host:
        raise TrackingError(
            f"--host {host}: IPv6 addresses are not supported (MLflow's host check and the "
            f"printed URI assume IPv4); use 127.0.0.1 (this machine only) or 0.0.0.0"
        )
    try:
        socket.getaddrinfo(host, None, socket.AF_INET)
    except (socket.gaierror, UnicodeError):
        raise TrackingError(
            f"--host {host}: not an IPv4 address or a known host name; use 127.0.0.1 or 0.0.0.0"
        ) from None


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise TrackingError(f"--port {port}: a TCP port is 1-65535; 5000 is MLflow's usual one")


def check_bindable(host: str, port: int, what: str = "--port") -> None:
    """Bind once ourselves (as uvicorn will, with SO_REUSEADDR): a busy port, a privileged port
    or an address of another machine is one clear line before anything starts."""
    check_port(port)
    busy = TrackingError(
        f"port {port} on {host} is already in use (another MLflow server?); "
        f"choose another with {what}"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except PermissionError:
            raise TrackingError(
                f"port {port} needs root (ports below 1024 are privileged); choose one above "
                f"1023 with {what}"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise busy from None
            raise TrackingError(
                f"cannot listen on {host}:{port} ({exc.strerror}); --host must be an address "
                f"of this machine (127.0.0.1, 0.0.0.0 or one of its interfaces)"
            ) from None
    # SO_REUSEADDR lets a bind succeed next to a listener on another local address of the same
    # port in some setups: a connect on loopback settles it.
    if host in ("127.0.0.1", "localhost", "0.0.0.0") and port_in_use(host, port):
        raise busy


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((probe_host, port)) == 0


def public_uri(host: str, port: int) -> str:
    """The URI clients should use: loopback stays loopback, a wildcard bind gets the FQDN."""
    name = socket.getfqdn() if host in ("0.0.0.0", "::", "") else host
    return f"http://{name}:{port}"


def default_allowed_hosts(port: int) -> str:
    """MLflow 3 rejects Host headers other than localhost/private IPs: add this machine's names
    so compute nodes can use the URI printed for them."""
    names = {socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1"}
    patterns = [p for n in sorted(names) for p in (n, f"{n}:*")]
    return ",".join([*patterns, "10.*", "192.168.*", "172.*"])


@dataclass
class MlflowServer:
    """A running ``mlflow server``; ``stop`` ends its whole process group."""

    backend_store_uri: str
    artifacts_destination: str
    host: str
    port: int
    log_path: Path | None
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the server (pool sizes, PGPASSFILE, auth): never its argv."""
    app_name: str | None = None
    allowed_hosts: str | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.port}"

    @property
    def pgid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", self.artifacts_destination,
            "--host", self.host,
            "--port", str(self.port),
            "--workers", str(self.workers),
            # Our log config adds the cause of every failed request (glamhpc.tracking.serverlog).
            # uvicorn kills a worker that does not answer its health ping within 5 s: a worker
            # importing MLflow on a loaded login node can take longer, and was killed and
            # restarted over and over (measured on 2 shared cores).
            "--uvicorn-opts",
            f"--log-config {shlex.quote(str(LOG_CONFIG))} --timeout-worker-healthcheck 60",
        ]  # fmt: skip
        if self.app_name:
            cmd += ["--app-name", self.app_name]
        if self.allowed_hosts:
            cmd += ["--allowed-hosts", self.allowed_hosts]
        return cmd

    def start(self, ready_timeout_s: float = 90.0, allowed_hosts: str | None = None) -> None:
        """Start (or restart, on the same port and store) and wait until /health answers."""
        if allowed_hosts is not None:
            self.allowed_hosts = allowed_hosts
        check_bindable(self.host, self.port)
        env = {**os.environ, **SERVER_ENV, **self.env}
        env.pop("MLFLOW_TRACKING_URI", None)
        if self.log_path is not None:
            self._log = open_log(self.log_path)
        self.process = subprocess.Popen(
            self.command(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            start_new_session=True,  # setsid: its own process group, killed as a whole
        )
        self.wait_ready(ready_timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        try:
            exit_code = wait_healthy(self.process, self.uri, timeout_s)
        except TimeoutError:
            self.stop()
            raise TrackingError(
                f"mlflow server did not answer on {self.uri} within {timeout_s:g} s"
                f"{self._log_hint()}"
            ) from None
        if exit_code is not None:
            raise TrackingError(
                f"mlflow server exited with code {exit_code} while starting{self._log_hint()}"
            )

    def _log_hint(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        tail = self.log_path.read_bytes()[-400:].decode(errors="replace").strip().splitlines()
        return f" (log {self.log_path}: {tail[-1] if tail else 'empty'})"

    def _signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group, like a crashed node would (used by the outage test)."""
        self._signal_group(signal.SIGKILL)
        self._reap(10.0)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the group; SIGKILL what is left after ``timeout_s``."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        if not self._reap(timeout_s):
            self._signal_group(signal.SIGKILL)
            self._reap(5.0)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _reap(self, timeout_s: float) -> bool:
        assert self.process is not None
        return reap_group(self.process, timeout_s)

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_healthy(process: subprocess.Popen[Any] | None, uri: str, timeout_s: float) -> int | None:
    """Poll ``uri``/health until it answers 200: None then, or the exit code if ``process`` (the
    server being started) ended first. TimeoutError when neither happened in ``timeout_s``."""
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return int(process.returncode)
        try:
            if requests.get(uri + "/health", timeout=2).status_code == 200:
                return None
        except requests.exceptions.RequestException:
            pass
        time.sleep(0.25)
    raise TimeoutError(uri)


def reap_group(process: subprocess.Popen[Any], timeout_s: float) -> bool:
    """Wait for a group leader, then until no process of its group is left (a server's workers
    or PostgreSQL's backends leave right after their leader). False when time ran out."""
    deadline = time.monotonic() + timeout_s
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def start_server(
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    log_path: Path | None = None,
    ready_timeout_s: float = 90.0,
    allowed_hosts: str | None = None,
    workers: int = 1,
    writers: int = DEFAULT_WRITERS,
    env: dict[str, str] | None = None,
    app_name: str | None = None,
) -> MlflowServer:
    """Start ``mlflow server`` and return once it answers. Defaults: ./mlflow.db and
    ./mlartifacts (absolute), loopback, port 5000."""
    server = make_server(
        backend_store_uri, artifacts_destination, host, port, log_path, workers, writers, env,
        app_name,
    )  # fmt: skip
    server.start(ready_timeout_s, allowed_hosts or server_allowed_hosts(host, port))
    return server


def server_allowed_hosts(host: str, port: int) -> str | None:
    return None if host in ("127.0.0.1", "localhost") else default_allowed_hosts(port)


def make_server(
    backend_store_uri: str | None,
    artifacts_destination: str | None,
    host: str,
    port: int,
    log_path: Path | None,
    workers: int = 1,
    writers: int = DEFAULT_WRITERS,
    env: dict[str, str] | None = None,
    app_name: str | None = None,
) -> MlflowServer:
    """The server, configured but not started (the caller owns stopping it, even when a
    signal arrives while it boots)."""
    backend = normalize_uri(backend_store_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    artifacts = artifacts_destination or str(Path.cwd() / "mlartifacts")
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).resolve())
    server_env = {**pool_env(backend, writers), **(env or {})}
    return MlflowServer(backend, artifacts, host, port, log_path, workers, server_env, app_name)
