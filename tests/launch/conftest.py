"""Shared by the launch tests: a private job registry, and job records to put in it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from glamhpc.launch import registry


@pytest.fixture
def registry_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`GLAMHPC_STATE_DIR` in the test's folder: the registry starts empty and stays private."""
    monkeypatch.setenv("GLAMHPC_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def job_record() -> Callable[..., registry.JobRecord]:
    """A factory of registry records: ``job_record("5", kind="sweep", runs=[...])``."""

    def make(job_id: str, kind: str = "run", name: str = "r", **kw: object) -> registry.JobRecord:
        return registry.JobRecord(
            job_id=job_id,
            kind=kind,
            name=name,
            executor="slurm",
            folder=str(kw.pop("folder", "/nowhere")),
            **kw,  # type: ignore[arg-type]
        )

    return make
