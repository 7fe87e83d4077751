"""Keeping secrets out of stored, printed and logged copies (see ``redact``).

Torch-free and MLflow-free: the run directory, the launchers on a login node and the trainer all
call it before they write.
"""

from glamhpc.secrets.config import redacted
from glamhpc.secrets.redact import (
    MASK,
    is_secret_name,
    redact_config,
    redact_text,
    split_credentials,
    strip_credentials,
)

__all__ = [
    "MASK",
    "is_secret_name",
    "redact_config",
    "redact_text",
    "redacted",
    "split_credentials",
    "strip_credentials",
]
