"""A private PostgreSQL server for `glamhpc tracking-server --backend postgres`.

One data folder (``initdb``) under the server's ``--data`` folder, listening on loopback only
(the MLflow server next to it is its only client), no Unix socket (nothing to clash with a
system server's /var/run/postgresql), password (SCRAM) authentication. Passwords are generated
once and kept in a 0600 pgpass file that libpq reads through ``PGPASSFILE``: never on an argv.

PostgreSQL refuses to run as root. When glamhpc runs as root (containers, CI, a cluster's
service account), initdb and postgres run as an unprivileged user: ``$GLAMHPC_PG_USER``, default
``postgres``, the system user Debian's ``postgresql`` package creates. The switch is done by
``subprocess`` itself (setgid/setgroups/setuid in the child before exec), so no su/runuser
process sits between us and the postmaster and signals reach it directly.

Two roles: ``glamhpc`` (the superuser initdb creates, used only here to create the other one)
and ``mlflow``, an ordinary role that owns the ``mlflow`` database MLflow uses.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from glamhpc.tracking.secretfiles import (
    new_password,
    open_log,
    private_dir,
    read_secret,
    write_secret,
)
from glamhpc.tracking.server import reap_group
from glamhpc.tracking.uri import TrackingError

SUPERUSER = "glamhpc"
ROLE = "mlflow"
DATABASE = "mlflow"
HOST = "127.0.0.1"
DEFAULT_OS_USER = "postgres"
DRIVER = "postgresql+psycopg2"
"""SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; we ship psycopg2 (constraints.txt)."""


def with_driver(uri: str) -> str:
    """``postgresql://`` / ``postgres://`` -> ``postgresql+psycopg2://``; explicit drivers stay."""
    for bare in ("postgresql://", "postgres://"):
        if uri.startswith(bare):
            return DRIVER + "://" + uri[len(bare) :]
    return uri


def find_bindir() -> Path:
    """Where ``initdb`` and ``postgres`` are: $PATH, else the newest /usr/lib/postgresql/*/bin
    (Debian keeps the server binaries off $PATH)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for bindir in reversed(debian):
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise TrackingError(
        "PostgreSQL server binaries (initdb, postgres) not found: install them "
        "(`apt-get install postgresql` on Debian/Ubuntu) or point --backend-store-uri at an "
        "existing server"
    )


@dataclass(frozen=True)
class OsUser:
    """Who runs initdb and postgres: ourselves, or an unprivileged user when we are root."""

    name: str
    uid: int
    gid: int
    home: str

    @property
    def is_me(self) -> bool:
        return self.uid == os.getuid()

    def popen_kwargs(self) -> dict[str, Any]:
        if self.is_me:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def os_user() -> OsUser:
    if os.getuid() != 0:
        me = pwd.getpwuid(os.getuid())
        return OsUser(me.pw_name, me.pw_uid, me.pw_gid, me.pw_dir)
    name = os.environ.get("GLAMHPC_PG_USER", DEFAULT_OS_USER)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise TrackingError(
            f"running as root, and PostgreSQL refuses root: it runs as the user '{name}', which "
            f"does not exist; install Debian's postgresql package (it creates 'postgres'), "
            f"create a system user (`useradd --system {name}`), or set GLAMHPC_PG_USER"
        ) from None
    if entry.pw_uid == 0:
        raise TrackingError(f"GLAMHPC_PG_USER={name} is root; PostgreSQL refuses to run as root")
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def max_connections_for(workers: int, per_worker: int) -> int:
    """Every MLflow worker may open ``per_worker`` connections at peak; 10 more for us, psql and
    PostgreSQL's reserved superuser slots."""
    return workers * per_worker + 10


@dataclass
class PostgresServer:
    """A postgres postmaster in its own session on ``HOST:port``, data in ``data/postgres``."""

    data: Path
    port: int
    max_connections: int = 100
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pgdata(self) -> Path:
        return self.data / "postgres"

    @property
    def passfile(self) -> Path:
        return self.data / "secrets" / "pgpass"

    @property
    def log_path(self) -> Path:
        return self.data / "postgres.log"

    @property
    def uri(self) -> str:
        """MLflow's store URI: no password in it (libpq takes it from PGPASSFILE)."""
        return f"{DRIVER}://{ROLE}@{HOST}:{self.port}/{DATABASE}"

    def client_env(self) -> dict[str, str]:
        return {"PGPASSFILE": str(self.passfile)}

    def _passwords(self) -> dict[str, str]:
        """{role: password} from the pgpass file, created with fresh passwords the first time."""
        if not self.passfile.exists():
            lines = [f"{HOST}:*:*:{user}:{new_password()}" for user in (SUPERUSER, ROLE)]
            write_secret(self.passfile, "\n".join(lines) + "\n")
        found = {}
        for line in read_secret(self.passfile).splitlines():
            parts = line.split(":")
            if len(parts) == 5:
                found[parts[3]] = parts[4]
        if set(found) < {SUPERUSER, ROLE}:
            raise TrackingError(f"{self.passfile} lacks a line for {SUPERUSER} or {ROLE}")
        return found

    def _as_db_user(self, user: OsUser) -> dict[str, Any]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": user.home,
            "LC_ALL": "C",
            "TZ": "UTC",
        }
        return {"env": env, **user.popen_kwargs()}

    def init(self) -> None:
        """initdb once (a data folder that already holds a cluster is reused as it is)."""
        user = os_user()
        bindir = find_bindir()
        passwords = self._passwords()
        if (self.pgdata / "PG_VERSION").is_file():
            return
        if not user.is_me:
            # postgres' own files belong to the db user; the folder above only needs to be
            # searchable (0711) by it. Secrets stay in 0700 root-owned folders.
            os.chmod(self.data, 0o711)
        private_dir(self.pgdata)
        if not user.is_me:
            os.chown(self.pgdata, user.uid, user.gid)
            probe = subprocess.run(["test", "-w", str(self.pgdata)], **self._as_db_user(user))
            if probe.returncode != 0:
                raise TrackingError(
                    f"PostgreSQL runs as the unprivileged user '{user.name}' (it refuses root), "
                    f"and that user cannot reach {self.pgdata}: use a --data folder whose parent "
                    f"folders it can search (e.g. under /srv or /var/lib), or run as a normal user"
                )
        # initdb reads the superuser's password from a file (0600, the db user's, deleted
        # right after): /dev/stdin cannot be reopened by another user.
        pwfile = self.data / "secrets" / ".initdb-pw"
        write_secret(pwfile, passwords[SUPERUSER])
        if not user.is_me:
            os.chown(pwfile.parent, user.uid, user.gid)
            os.chown(pwfile, user.uid, user.gid)
        try:
            result = subprocess.run(
                [
                    str(bindir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
                    "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale",
                    "--no-instructions",
                ],
                capture_output=True,
                **self._as_db_user(user),
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
            if not user.is_me:
                os.chown(pwfile.parent, os.getuid(), os.getgid())
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise TrackingError(f"initdb failed for {self.pgdata}: {tail.splitlines()[-1:]}")

    def start(self, ready_timeout_s: float = 60.0) -> None:
        self.init()
        user = os_user()
        bindir = find_bindir()
        self._log = open_log(self.log_path)
        self.process = subprocess.Popen(
            [
                str(bindir / "postgres"), "-D", str(self.pgdata), "-h", HOST,
                "-p", str(self.port), "-k", "", "-c", f"max_connections={self.max_connections}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the backends it forks stop with it
            **self._as_db_user(user),
        )  # fmt: skip
        self._wait_ready(ready_timeout_s)
        self._create_database()

    def _connect(self, user: str, dbname: str, timeout_s: int = 3) -> Any:
        import psycopg2

        return psycopg2.connect(
            host=HOST,
            port=self.port,
            user=user,
            dbname=dbname,
            password=self._passwords()[user],
            connect_timeout=timeout_s,
        )

    def _wait_ready(self, timeout_s: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise TrackingError(
                    f"postgres exited with code {self.process.returncode} while starting "
                    f"(log {self.log_path}: {self._log_tail()})"
                )
            try:
                self._connect(SUPERUSER, "postgres").close()
                return
            except psycopg2.OperationalError:
                time.sleep(0.25)
        self.stop()
        raise TrackingError(f"postgres did not accept connections within {timeout_s:g} s")

    def _create_database(self) -> None:
        """Role and database for MLflow, idempotent. The password is a bound parameter of a
        statement sent over the connection, never an argv of psql."""
        from psycopg2 import sql

        conn = self._connect(SUPERUSER, "postgres")
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
                if cur.fetchone() is None:
                    cur.execute(
                        sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(ROLE)),
                        (self._passwords()[ROLE],),
                    )
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(DATABASE), sql.Identifier(ROLE)
                        )
                    )
        finally:
            conn.close()

    def _log_tail(self) -> str:
        if not self.log_path.is_file():
            return "empty"
        lines = self.log_path.read_bytes()[-600:].decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "empty"

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: open transactions roll back, data is consistent on disk), then
        SIGQUIT, then SIGKILL of the whole group as the last resort."""
        if self.process is None:
            return
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGQUIT, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)
            if self._reap(wait_s):
                break
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self._reap(5.0)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _reap(self, timeout_s: float) -> bool:
        assert self.process is not None
        return reap_group(self.process, timeout_s)
