"""The cause of every failed request in the tracking server's log (issue 17).

MLflow logs only 5xx errors; a 4xx answer (bad input, but also SQLAlchemy's "QueuePool limit
reached", which MLflow maps to 400) left no trace on the server, only warnings in the writers'
logs. ``failed_requests`` is named as a filter factory in glamhpc/data/uvicorn_log_config.yaml,
which `glamhpc tracking-server` passes to uvicorn (``--log-config``): uvicorn applies it in
every process before the app is imported, so the hook below is registered on MLflow's Flask app
(the one the basic-auth app wraps too) before it serves a request.
"""

from __future__ import annotations

import logging
from typing import Any

LOGGER = "glamhpc.tracking.server"
MAX_CAUSE = 300


def failed_requests() -> logging.Filter:
    """Register the after-request hook (once per process) and return a pass-through filter."""
    from flask import request
    from mlflow.server import app

    logger = logging.getLogger(LOGGER)

    def log_failed(response: Any) -> Any:
        if response.status_code >= 400:
            cause = ""
            if not response.is_streamed and not response.direct_passthrough:
                cause = response.get_data(as_text=True).strip().replace("\n", " ")[:MAX_CAUSE]
            logger.warning(
                "%s %s failed with HTTP %d: %s",
                request.method,
                request.path,
                response.status_code,
                cause or "(no body)",
            )
        return response

    if not getattr(app, "_glamhpc_failed_request_log", False):
        app.after_request(log_failed)
        app._glamhpc_failed_request_log = True  # type: ignore[attr-defined]
    return logging.Filter()
