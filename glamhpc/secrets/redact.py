"""Secrets kept out of what glamhpc stores, prints and logs (pure functions, no I/O).

Config files are code: ``launch.setup`` is shell run by the batch script, and a tracking URI may
carry ``user:password@``. The real values are still used where they must be (the batch script,
the connection to the tracking server); every copy that is written to a run directory, a
registry, MLflow or a terminal goes through :func:`redact_text` (free text) or
:func:`redact_config` (a config dict), which replace the secret parts by ``***``:

- credentials in a URL: ``https://user:pass@host/x`` -> ``https://***@host/x``;
- values of variables and YAML-style keys whose name says secret (a ``_``-separated part is
  TOKEN, PASSWORD, PASSWD, PASS, SECRET, KEY, APIKEY, CREDENTIAL(S), AUTH, PAT, or the name ends
  in TOKEN/PASSWORD/SECRET/APIKEY): ``export HF_TOKEN=hf_x`` -> ``export HF_TOKEN=***``;
- values of command-line options named the same way: ``--token X``, ``--password=X``;
- HTTP authentication headers: ``Authorization: Bearer x`` -> ``Authorization: ***``;
- well-known token formats standing alone (Hugging Face ``hf_``, GitHub ``ghp_``/
  ``github_pat_``, GitLab ``glpat-``, Slack ``xox?-``, AWS access key ids).

A tracking URI is different: it must stay usable, so :func:`split_credentials` removes its
credentials entirely (the host remains) and hands them back for the environment
(MLFLOW_TRACKING_USERNAME/PASSWORD, which MLflow reads on every request).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

#: ``_``/``-``-separated name parts that mark a value as secret.
SECRET_PARTS = frozenset(
    {
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "PASS",
        "PASSPHRASE",
        "SECRET",
        "SECRETS",
        "KEY",
        "APIKEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "AUTH",
        "PAT",
        "COOKIE",
    }
)
#: Name endings that mark a value as secret even without a separator (GITHUBTOKEN, DBPASSWORD).
SECRET_SUFFIXES = ("TOKEN", "PASSWORD", "PASSWD", "SECRET", "APIKEY")


def is_secret_name(name: str) -> bool:
    """Whether a variable, key or option name says its value is a secret."""
    upper = name.upper().strip("-_")
    if not upper:
        return False
    parts = re.split(r"[_\-.]+", upper)
    return any(part in SECRET_PARTS for part in parts) or upper.endswith(SECRET_SUFFIXES)


# scheme://userinfo@ : userinfo never contains '/', '@', whitespace, '?' or '#'.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#'\"]+@")
# A value: a command substitution (kept: it says where the secret comes from), double-quoted,
# single-quoted, or a bare word (ends at whitespace or a shell operator).
_VALUE = r"(?:\$\([^)\n]*\)|\"(?:[^\"\\\n]|\\.)*\"?|'[^'\n]*'?|[^\s;&|'\"]+)"
# NAME=value (shell, env files) and NAME: value (YAML, headers-like): the name is checked apart.
_ASSIGN = re.compile(
    r"(?<![\w\-])([A-Za-z_][A-Za-z0-9_.\-]*)([\"']?[ \t]*[=:][ \t]*)(" + _VALUE + ")"
)
# --name value / --name=value
_OPTION = re.compile(r"(?<![\w\-])(--?[A-Za-z][A-Za-z0-9_\-]*)(=|[ \t]+)(" + _VALUE + ")")
_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|private-token|x-auth-token|"
    r"x-vault-token|cookie)([ \t]*:[ \t]*)[^\n\"']+"
)
_TOKEN_FORMATS = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
    r"glpat-[A-Za-z0-9_\-]{20,}|xox[abposr]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16})\b"
)


def _masked_value(value: str) -> str:
    """``***`` keeping the value's quotes, so the redacted line still reads as shell."""
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return value[0] + MASK + value[0]
    return MASK


def _kept(value: str) -> bool:
    """Values that are not secrets themselves: already masked, or a reference to where the
    secret comes from (``$VAR``, ``${VAR}``, ``$(cat FILE)``), which the reader needs."""
    bare = value.strip("\"'")
    return bare in (MASK, "") or bare.startswith("$")


def redact_text(text: str) -> str:
    """``text`` with every secret part replaced by ``***`` (the module docstring's rules).

    Idempotent, and the identity on text without secrets.
    """
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _HEADER.sub(lambda m: m.group(1) + m.group(2) + MASK, text)

    def assignment(m: re.Match[str]) -> str:
        if not is_secret_name(m.group(1)) or _kept(m.group(3)):
            return m.group(0)
        return m.group(1) + m.group(2) + _masked_value(m.group(3))

    def option(m: re.Match[str]) -> str:
        value = m.group(3)
        # `--token --other` is a flag followed by a flag, not a value.
        if not is_secret_name(m.group(1)) or value.startswith("-") or _kept(value):
            return m.group(0)
        return m.group(1) + m.group(2) + _masked_value(value)

    text = _ASSIGN.sub(assignment, text)
    text = _OPTION.sub(option, text)
    return _TOKEN_FORMATS.sub(MASK, text)


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """(URI without credentials, user name, password) of a URL; names percent-decoded.

    ``http://u:p@host:5000/x`` -> (``http://host:5000/x``, ``u``, ``p``); a URI without
    credentials (or not a URL) comes back unchanged with (None, None).
    """
    if "://" not in uri or "@" not in uri:
        return uri, None, None
    try:
        parts = urlsplit(uri)
    except ValueError:
        return _URL_USERINFO.sub(lambda m: m.group(1), uri), None, None
    if "@" not in parts.netloc:
        return uri, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    clean = urlunsplit(parts._replace(netloc=host))
    return clean, unquote(user) or None, unquote(password) if sep else None


def strip_credentials(uri: str) -> str:
    """A URI without its ``user:password@`` part (still usable to connect)."""
    return split_credentials(uri)[0]


def redact_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config dict (``glamhpc.config.to_dict``) that is safe to store or log.

    ``tracking.uri`` loses its credentials (it stays a working URI); every other string goes
    through :func:`redact_text`, and a string under a secret-looking key becomes ``***``.
    """
    out = _redact_value(data)
    tracking = out.get("tracking")
    if isinstance(tracking, dict) and isinstance(tracking.get("uri"), str):
        tracking["uri"] = strip_credentials(tracking["uri"])
    return out


def _redact_value(value: Any, key: str = "") -> Any:
    if isinstance(value, Mapping):
        return {k: _redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, str):
        if key and is_secret_name(key) and value:
            return MASK
        return redact_text(value)
    return value
