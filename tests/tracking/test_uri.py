"""Where runs go: URI resolution for an explicit URI, the environment and a Config."""

from __future__ import annotations

from pathlib import Path

import pytest

from glamhpc.config import load_config
from glamhpc.tracking import resolve_uri, tracking_uri


def test_uri_resolution_order(tracking_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_uri(None) == f"sqlite:///{tracking_env / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.org:5000")
    assert resolve_uri(None) == "http://example.org:5000"
    assert resolve_uri("sqlite:///rel/x.db") == f"sqlite:///{tracking_env / 'rel' / 'x.db'}"


def test_config_tracking_uri(tracking_env: Path) -> None:
    """Enabled: resolved here (env, default, relative SQLite made absolute); disabled: as is."""
    cfg = load_config(None, [])
    assert tracking_uri(cfg, environ={}) == f"sqlite:///{tracking_env / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": "http://example.org:5000"}
    assert tracking_uri(cfg, environ=env) == "http://example.org:5000"
    rel = load_config(None, ["tracking.uri=sqlite:///rel/x.db"])
    assert tracking_uri(rel, environ=env) == f"sqlite:///{tracking_env / 'rel' / 'x.db'}"
    off = load_config(None, ["tracking.enabled=false", "tracking.uri=sqlite:///rel/x.db"])
    assert tracking_uri(off) == "sqlite:///rel/x.db"
    assert tracking_uri(load_config(None, ["tracking.enabled=false"])) is None
