"""The stored copy of a Config: :func:`glamhpc.secrets.redact.redact_config` applied to it."""

from __future__ import annotations

from glamhpc.config import Config, config_from_dict, to_dict
from glamhpc.secrets.redact import redact_config


def redacted(cfg: Config) -> Config:
    """``cfg`` as it may be stored (config.yaml, launch snapshot): secrets in ``launch.setup``
    masked, ``tracking.uri`` without credentials.

    A resume compares the stored copy's frozen sections (glamhpc.rundir.FROZEN_ON_RESUME) with
    the live config: redaction changes only strings that look like secrets, which those sections
    (numbers, names of models and levels, paths) do not hold.
    """
    return config_from_dict(redact_config(to_dict(cfg)))
