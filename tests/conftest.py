"""Shared pytest fixtures (keep this file small: fixtures live in topic modules)."""

from fixtures_mlflow import _sqlite_template, mlflow_server, sqlite_uri, sweep_2x2, tracking_env

__all__ = ["_sqlite_template", "mlflow_server", "sqlite_uri", "sweep_2x2", "tracking_env"]
