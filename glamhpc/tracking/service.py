"""What `glamhpc tracking-server` runs: MLflow's server, its store (SQLite file or a private
PostgreSQL), optional basic-auth, checked before anything starts and stopped as a whole.

Layout of the data folder (``--data``, default the working folder)::

    DATA/mlflow.db          SQLite store (--backend sqlite)
    DATA/postgres/          PostgreSQL cluster (--backend postgres), DATA/postgres.log its log
    DATA/mlartifacts/       artifacts (proxied by the server: writers need no file access)
    DATA/secrets/           0700: pgpass, credentials, basic_auth.ini/.db, flask_secret_key
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from glamhpc.tracking.postgres import PostgresServer, max_connections_for, with_driver
from glamhpc.tracking.secretfiles import private_dir
from glamhpc.tracking.server import (
    DEFAULT_WRITERS,
    MlflowServer,
    check_bindable,
    check_host,
    check_port,
    connections_per_worker,
    free_port,
    make_server,
    server_allowed_hosts,
)
from glamhpc.tracking.serverauth import APP_NAME, auth_env
from glamhpc.tracking.uri import TrackingError

BACKENDS = ("sqlite", "postgres")
LOOPBACK = ("127.0.0.1", "localhost")


@dataclass
class ServiceSpec:
    data: Path
    backend: str | None = None
    """sqlite | postgres; None: postgres for a postgresql:// --backend-store-uri, else sqlite."""
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    writers: int = DEFAULT_WRITERS
    auth: bool = False
    backend_store_uri: str | None = None
    """An existing store; with --backend postgres: a server to use instead of starting one."""
    artifacts_destination: str | None = None
    allowed_hosts: str | None = None
    log_path: Path | None = None

    @property
    def secrets(self) -> Path:
        return self.data / "secrets"

    @property
    def exposed_without_auth(self) -> bool:
        return self.host not in LOOPBACK and not self.auth


def validate(spec: ServiceSpec) -> ServiceSpec:
    """Every user mistake as one TrackingError, before a file or a process is created.
    Returns the spec with the backend filled in."""
    check_host(spec.host)
    check_port(spec.port)
    if spec.workers < 1 or spec.workers > 64:
        raise TrackingError(f"--workers {spec.workers}: use 1-64 (default: the CPU count, <= 4)")
    if spec.writers < 1:
        raise TrackingError(f"--writers {spec.writers}: the expected concurrent runs, >= 1")
    uri = spec.backend_store_uri
    backend = spec.backend or ("postgres" if uri and uri.startswith("postgres") else "sqlite")
    if backend not in BACKENDS:
        raise TrackingError(f"--backend {backend}: choose sqlite or postgres")
    if uri:
        try:
            parts = urlsplit(uri)
            password = parts.password
        except ValueError as exc:
            raise TrackingError(f"--backend-store-uri: {exc}") from None
        if password:
            raise TrackingError(
                "--backend-store-uri holds a password, which every user would see in `ps`: "
                "remove it and put it in a 0600 pgpass file named by $PGPASSFILE"
            )
        if backend == "postgres" and not uri.startswith(("postgresql", "postgres://")):
            raise TrackingError(
                f"--backend postgres with --backend-store-uri {uri}: give a postgresql:// URI "
                f"or leave it out to start a private PostgreSQL in {spec.data}"
            )
    if uri and backend == "postgres":
        spec.backend_store_uri = with_driver(uri)
    if backend == "postgres":
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise TrackingError(
                "--backend postgres needs psycopg2: pip install -c constraints.txt psycopg2-binary"
            ) from None
    if spec.data.exists() and not spec.data.is_dir():
        raise TrackingError(f"--data {spec.data} is a file; give a folder")
    check_bindable(spec.host, spec.port)
    spec.backend = backend
    return spec


@dataclass
class TrackingService:
    spec: ServiceSpec
    mlflow: MlflowServer | None = None
    postgres: PostgresServer | None = None
    admin_source: str | None = None
    _stopped: bool = field(default=False, repr=False)

    def start(self, ready_timeout_s: float = 300.0) -> None:
        """Store first, then MLflow; on any failure what was started is stopped again."""
        spec = self.spec
        spec.data.mkdir(parents=True, exist_ok=True)
        env: dict[str, str] = {}
        uri = spec.backend_store_uri
        try:
            if spec.backend == "postgres" and uri is None:
                private_dir(spec.secrets)
                per_worker = connections_per_worker(spec.writers)
                self.postgres = PostgresServer(
                    spec.data.resolve(),
                    free_port(),
                    max_connections=max_connections_for(spec.workers, per_worker),
                )
                self.postgres.start()
                uri = self.postgres.uri
                env.update(self.postgres.client_env())
            uri = uri or f"sqlite:///{spec.data.resolve() / 'mlflow.db'}"
            artifacts = spec.artifacts_destination or str(spec.data.resolve() / "mlartifacts")
            app_name = None
            if spec.auth:
                private_dir(spec.secrets)
                auth, self.admin_source = auth_env(spec.secrets.resolve())
                env.update(auth)
                app_name = APP_NAME
            self.mlflow = make_server(
                uri, artifacts, spec.host, spec.port, spec.log_path, spec.workers, spec.writers,
                env, app_name,
            )  # fmt: skip
            self.mlflow.start(
                ready_timeout_s, spec.allowed_hosts or server_allowed_hosts(spec.host, spec.port)
            )
        except BaseException:
            self.stop()
            raise

    def running(self) -> bool:
        process = self.mlflow.process if self.mlflow is not None else None
        return process is not None and process.poll() is None

    def wait(self, poll_s: float = 0.5) -> None:
        """Until the MLflow server exits (a signal handler interrupts the sleep)."""
        while self.running():
            time.sleep(poll_s)

    def stop(self) -> None:
        """MLflow's whole process group, then PostgreSQL (fast shutdown). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.mlflow is not None:
                self.mlflow.stop()
        finally:
            if self.postgres is not None:
                self.postgres.stop()
