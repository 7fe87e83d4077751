"""A real ``mlflow server`` as a managed child: `glamhpc tracking-server`, tests, benchmarks.

Started in its own session (process group) with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` and
one worker: the server's background job runner spawns worker processes that are not its direct
children (5x slower logging on 2 cores, STACK_NOTES), and stopping the whole group is the only way
to stop uvicorn's worker too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from glamhpc.tracking.uri import TrackingError, normalize_uri

SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


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
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.port}"

    @property
    def pgid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self, allowed_hosts: str | None = None) -> list[str]:
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", self.artifacts_destination,
            "--host", self.host,
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        if allowed_hosts:
            cmd += ["--allowed-hosts", allowed_hosts]
        return cmd

    def start(self, ready_timeout_s: float = 90.0, allowed_hosts: str | None = None) -> None:
        """Start (or restart, on the same port and store) and wait until /health answers."""
        if port_in_use(self.host, self.port):
            raise TrackingError(
                f"port {self.port} on {self.host} is already in use (another MLflow server?); "
                f"choose another with --port"
            )
        env = {**os.environ, **SERVER_ENV}
        env.pop("MLFLOW_TRACKING_URI", None)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            self.command(allowed_hosts),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            start_new_session=True,  # setsid: its own process group, killed as a whole
        )
        self.wait_ready(ready_timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        import requests

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise TrackingError(
                    f"mlflow server exited with code {self.process.returncode} while starting"
                    f"{self._log_hint()}"
                )
            try:
                if requests.get(self.uri + "/health", timeout=2).status_code == 200:
                    return
            except requests.exceptions.RequestException:
                pass
            time.sleep(0.25)
        self.stop()
        raise TrackingError(
            f"mlflow server did not answer on {self.uri} within {timeout_s:g} s{self._log_hint()}"
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
        """Wait for the leader, then until no process of the group is left."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
        return False

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    log_path: Path | None = None,
    ready_timeout_s: float = 90.0,
    allowed_hosts: str | None = None,
) -> MlflowServer:
    """Start ``mlflow server`` and return once it answers. Defaults: ./mlflow.db and
    ./mlartifacts (absolute), loopback, port 5000."""
    backend = normalize_uri(backend_store_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    artifacts = artifacts_destination or str(Path.cwd() / "mlartifacts")
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).resolve())
    if allowed_hosts is None and host not in ("127.0.0.1", "localhost"):
        allowed_hosts = default_allowed_hosts(port)
    server = MlflowServer(backend, artifacts, host, port, log_path)
    server.start(ready_timeout_s, allowed_hosts)
    return server
