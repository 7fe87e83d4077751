"""Links into the MLflow UI: the compare-runs view of a set of runs, side by side.

MLflow 3.17's UI is a hash-routed single page app; its compare route is built by
``Routes.getCompareRunPageRoute(runIds, experimentIds)`` as
``#/compare-runs?runs=<JSON list>&experiments=<JSON list>`` (server/js, main.*.js).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import quote, urlsplit, urlunsplit

LOCAL_UI = "http://127.0.0.1:5000"
"""Where `mlflow ui` serves a file store by default: the base of links for a SQLite store."""


def ui_base(uri: str) -> str:
    """The UI's address for a tracking URI: the server itself for http(s) (any credentials in
    the URI left out of the link), else the local `mlflow ui` default."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.hostname:
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return LOCAL_UI


def compare_runs_url(uri: str, experiment_ids: Sequence[str], run_ids: Sequence[str]) -> str:
    """The compare-runs URL of ``run_ids`` (order kept, duplicates dropped)."""
    runs = list(dict.fromkeys(run_ids))
    experiments = sorted(set(experiment_ids))
    query = "runs=" + quote(json.dumps(runs, separators=(",", ":")), safe="")
    query += "&experiments=" + quote(json.dumps(experiments, separators=(",", ":")), safe="")
    return f"{ui_base(uri)}/#/compare-runs?{query}"
