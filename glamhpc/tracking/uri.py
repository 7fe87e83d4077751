"""Where runs go: tracking-URI resolution, a fast reachability probe, HTTP client defaults.

Kept free of MLflow imports at module level so that `glamhpc --help` stays fast; MLflow is imported
only by the functions that talk to a store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glamhpc.secrets import redact_text, split_credentials, strip_credentials

if TYPE_CHECKING:
    from glamhpc.config import Config


class TrackingError(RuntimeError):
    """A tracking problem the user can fix; the message is one line and says how."""


# The sender thread retries with its own backoff, so MLflow's built-in HTTP retries (7 retries,
# factor 2: minutes per failed call) only delay the outage warning and the shutdown of a job.
# These are set only where the user has not chosen values (MLflow reads them on every request).
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}

PROBE_TIMEOUT_S = 5.0
"""Seconds the start-up reachability probe waits for a tracking server's /health."""


def default_uri(cwd: Path | None = None) -> str:
    """MLflow's own default store, made absolute so a later `glamhpc sync` from elsewhere works."""
    base = (cwd or Path.cwd()).resolve()
    return f"sqlite:///{base / 'mlflow.db'}"


#: Where MLflow reads HTTP basic-auth credentials from (on every request).
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def resolve_uri(uri: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """explicit ``uri`` > $MLFLOW_TRACKING_URI > ``sqlite:///<cwd>/mlflow.db``.

    Relative SQLite paths and plain directories are made absolute: the URI is stored in the run
    directory and reused by the sender thread and by `glamhpc sync`, possibly from another folder.
    ``environ`` replaces ``os.environ`` (checks that inspect another environment, tests).

    The URI returned never carries credentials: it is stored (config snapshot, state.json, job
    registry), printed and logged. ``user:password@`` in it moves to MLFLOW_TRACKING_USERNAME/
    PASSWORD of this process (only when ``environ`` is None), where MLflow reads them and from
    where jobs inherit them (sbatch and the local executor pass the environment on).
    """
    env = os.environ if environ is None else environ
    chosen = uri or env.get("MLFLOW_TRACKING_URI") or default_uri()
    clean, user, password = split_credentials(chosen.strip())
    if environ is None:
        for name, value in zip(CREDENTIAL_ENV, (user, password), strict=True):
            if value is not None:
                os.environ[name] = value
    return normalize_uri(clean)


def tracking_uri(cfg: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """The tracking URI a config's runs log to, resolved HERE (``resolve_uri`` of
    ``cfg.tracking.uri``), so every rank on every node and every requeue writes to the store the
    caller meant, whatever their working directory.

    With ``tracking.enabled`` false nothing is logged: the config's value is returned unresolved
    (possibly None), only without credentials.
    """
    if not cfg.tracking.enabled:
        return None if cfg.tracking.uri is None else strip_credentials(cfg.tracking.uri)
    return resolve_uri(cfg.tracking.uri, environ)


def normalize_uri(uri: str) -> str:
    """Make local (sqlite / file / bare path) URIs absolute; leave remote ones untouched."""
    uri = uri.strip()
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///") :]
        if rest and rest != ":memory:" and not rest.startswith("/"):
            return f"sqlite:///{Path(rest).resolve()}"
        return uri
    if "://" not in uri and not uri.startswith(("databricks", "sqlite:", "file:")):
        # A bare path is what MLflow treats as a file store.
        return Path(uri).resolve().as_uri()
    return uri


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores)."""
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///") :]
        if rest and rest != ":memory:":
            return Path(rest if rest.startswith("/") else Path.cwd() / rest)
    return None


def apply_http_defaults() -> None:
    """Short MLflow HTTP retries (see HTTP_ENV_DEFAULTS); user-set values win."""
    for key, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def unreachable_message(uri: str, reason: str) -> str:
    """One line: what failed and the three ways out."""
    uri = strip_credentials(uri)
    local = default_uri()
    return (
        f"cannot reach the MLflow tracking server at {uri} ({reason}); start it "
        f"(`glamhpc tracking-server`), fix tracking.uri / MLFLOW_TRACKING_URI, unset "
        f"MLFLOW_TRACKING_URI to use the local default {local}, or set tracking.offline_ok=true "
        f"to journal metrics locally and `glamhpc sync RUN_DIR` later"
    )


def probe(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise TrackingError (one line) when ``uri`` cannot be used right now.

    HTTP servers are probed on /health with a short timeout instead of a first API call because
    MLflow's client would retry a refused connection for minutes before failing.
    """
    if is_http(uri):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
        except requests.exceptions.ConnectionError:
            raise TrackingError(unreachable_message(uri, "connection refused")) from None
        except requests.exceptions.Timeout:
            raise TrackingError(
                unreachable_message(uri, f"no answer within {timeout_s:g} s")
            ) from None
        except requests.exceptions.RequestException as exc:
            raise TrackingError(unreachable_message(uri, _short(exc))) from None
        if response.status_code >= 500:
            raise TrackingError(unreachable_message(uri, f"HTTP {response.status_code}"))
        # Servers behind a proxy may not expose /health (404): the first API call decides.
        return
    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir():
        raise TrackingError(
            f"the folder of the SQLite tracking store {uri} does not exist; create "
            f"{db.parent} or fix tracking.uri / MLFLOW_TRACKING_URI"
        )
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as exc:  # any store failure becomes one line for the user
        raise TrackingError(
            f"cannot open the MLflow tracking store {strip_credentials(uri)}: {_short(exc)}"
        ) from None


def client(uri: str) -> Any:
    """An MlflowClient bound to ``uri`` (never to the process-global tracking URI)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _short(exc: BaseException, limit: int = 200) -> str:
    """First line of an exception message, bounded: stack-like MLflow errors stay one line.
    Redacted: HTTP errors quote the URL they failed on, credentials included."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = redact_text(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


short_error = _short
