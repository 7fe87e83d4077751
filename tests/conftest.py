"""Shared pytest fixtures (keep this file small: fixtures live in topic modules)."""

from fixtures_mlflow import _sqlite_template, mlflow_server, sqlite_uri, tracking_env

__all__ = ["_sqlite_template", "mlflow_server", "sqlite_uri", "tracking_env"]
