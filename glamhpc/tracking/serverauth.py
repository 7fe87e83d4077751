"""`glamhpc tracking-server --auth`: MLflow's basic-auth app, configured without any argv secret.

Files, all in ``DATA/secrets`` (0700, each file 0600, created on the first ``--auth`` start):

* ``credentials``: the admin's user name and password, in MLflow's client format (``[mlflow]``
  with ``mlflow_tracking_username`` / ``mlflow_tracking_password``), so that it can be copied as
  it is to ``~/.mlflow/credentials``. ``$MLFLOW_AUTH_ADMIN_USERNAME`` /
  ``$MLFLOW_AUTH_ADMIN_PASSWORD`` in the server's environment win over it.
* ``basic_auth.ini``: the auth app's config (``MLFLOW_AUTH_CONFIG_PATH``): its user database
  (``basic_auth.db`` beside it), READ as the default permission, a 60 s credential cache (without
  it every request pays a PBKDF2 hash: a third of the throughput under a sweep's load).
* ``flask_secret_key``: CSRF key shared by all workers (``MLFLOW_FLASK_SERVER_SECRET_KEY``).

The admin password reaches MLflow through the environment; MLflow stores only its hash.
Writers authenticate with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` in their
environment (Slurm passes the submitting shell's environment to the job) or
``~/.mlflow/credentials``.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from glamhpc.tracking.secretfiles import new_password, read_secret, write_secret
from glamhpc.tracking.uri import TrackingError

APP_NAME = "basic-auth"
ADMIN = "admin"
CACHE_TTL_S = 60


def credentials_path(secrets: Path) -> Path:
    return secrets / "credentials"


def _read_credentials(path: Path) -> tuple[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(read_secret(path))
        section = parser["mlflow"]
        return section["mlflow_tracking_username"], section["mlflow_tracking_password"]
    except (configparser.Error, KeyError):
        raise TrackingError(
            f"{path} is not an MLflow credentials file ([mlflow] with mlflow_tracking_username "
            f"and mlflow_tracking_password); fix it or delete it to get a new admin password"
        ) from None


def admin_credentials(secrets: Path) -> tuple[str, str, str]:
    """(user, password, where they come from): the environment, else the credentials file,
    else a new random password written to that file."""
    env_password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD")
    if env_password:
        return os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or ADMIN, env_password, "environment"
    path = credentials_path(secrets)
    if not path.exists():
        write_secret(
            path,
            "[mlflow]\n"
            f"mlflow_tracking_username = {ADMIN}\n"
            f"mlflow_tracking_password = {new_password()}\n",
        )
    user, password = _read_credentials(path)
    return user, password, str(path)


def _ini(secrets: Path) -> str:
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{secrets / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        f"auth_cache_ttl_seconds = {CACHE_TTL_S}\n"
    )


def auth_env(secrets: Path) -> tuple[dict[str, str], str]:
    """(environment for ``mlflow server --app-name basic-auth``, where the admin credentials
    are). Refuses to start without Flask-WTF, which the auth app needs for CSRF."""
    try:
        import flask_wtf  # noqa: F401
    except ImportError:
        raise TrackingError(
            "--auth needs the Flask-WTF package (MLflow's auth extra): "
            "pip install -c constraints.txt flask-wtf"
        ) from None
    user, password, source = admin_credentials(secrets)
    ini = secrets / "basic_auth.ini"
    write_secret(ini, _ini(secrets))
    key_file = secrets / "flask_secret_key"
    if not key_file.exists():
        write_secret(key_file, new_password())
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": read_secret(key_file).strip(),
        "MLFLOW_AUTH_ADMIN_USERNAME": user,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
    }
    return env, source
