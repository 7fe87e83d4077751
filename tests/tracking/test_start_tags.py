"""What a training run's MLflow run says about its starts and hosts (real SQLite store): the
start count from the very first start, and the hosts in ONE tag (issue 14: `hosts`,
`glamhpc.host`, `glamhpc.hosts` and `slurm.nodelist` said the same thing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from glamhpc.config import load_config
from glamhpc.rl.run_tracking import start_tracker
from glamhpc.rundir import RunDir


def _tags(uri: str, run: RunDir) -> dict[str, str]:
    run_id = (run.path / "mlflow_run_id").read_text().strip()
    return MlflowClient(uri).get_run(run_id).data.tags


def test_starts_is_tagged_from_the_first_start_and_hosts_once(
    tracking_env: Path, sqlite_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[1-2]")
    cfg = load_config(None, [f"tracking.uri={sqlite_uri}", "train.run_root=runs"])
    run = RunDir.of(cfg, "tags")
    run.prepare(cfg)
    for start in (1, 2):
        with start_tracker(cfg, run, world_size=4) as tracker:
            tracker.log_metrics({"policy_loss": 1.0}, step=start)
        tags = _tags(sqlite_uri, run)
        assert tags.get("glamhpc.starts") == str(start), tags
    hosts = sorted(k for k in tags if "host" in k or k.endswith("nodelist"))
    assert hosts == ["glamhpc.hosts"], hosts
    assert tags["glamhpc.hosts"] == "n[1-2]"
    assert tags["slurm.job_id"] == "77" and tags["world_size"] == "4"
