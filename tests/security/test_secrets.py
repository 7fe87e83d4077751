"""Planted secrets never reach a file glamhpc writes, nor its output.

The secrets: credentials in the tracking URI, MLFLOW_TRACKING_PASSWORD and MLFLOW_TRACKING_TOKEN
in the environment, and `export HF_TOKEN=...` (plus a password and an Authorization header) in
`launch.setup`. A real `glamhpc submit` runs the job (local executor, its node command through the
stand-in apptainer from tests/bin, against a real MLflow server on loopback), then EVERY file
under the test's folder (run directory, job registry, stand-in engine log), every file of the
MLflow server (SQLite store, artifacts) and the command output are searched for each value.
`submit --dry-run` is searched the same way. The only file allowed to hold them is the user's
own config.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from glamhpc.tracking.server import MlflowServer

REPO = Path(__file__).resolve().parents[2]
STANDINS = REPO / "tests" / "bin"

URI_USER = "uriuser-c41d"
URI_PASSWORD = "uriPw-7f3a9c"
ENV_PASSWORD = "envPw-55e1b2"
ENV_TOKEN = "envTok-a8c4d0"
HF_TOKEN = "hf_PlantedValue0123456789abcdef"
SETUP_PASSWORD = "setupPw-3b9e"
BEARER = "bearerTok-92d7"
PLANTED = (URI_USER, URI_PASSWORD, ENV_PASSWORD, ENV_TOKEN, HF_TOKEN, SETUP_PASSWORD, BEARER)

SETUP = [
    f"export HF_TOKEN={HF_TOKEN}",
    f'export DB_PASSWORD="{SETUP_PASSWORD}"',
    f"echo curl -H 'Authorization: Bearer {BEARER}' >/dev/null",
    "export GLAMHPC_SETUP_RAN=1",
]

pytestmark = [pytest.mark.mlflow_server, pytest.mark.timeout(500)]


def _config(tmp_path: Path, server: MlflowServer) -> Path:
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    config["env"].update({"num_envs": 4})
    config["ppo"].update({"steps_per_env": 8, "minibatch_size": 16})
    config["train"] = {"run_root": str(tmp_path / "runs"), "max_updates": 2, "progress": False}
    host = server.uri.split("://", 1)[1]
    config["tracking"] = {"uri": f"http://{URI_USER}:{URI_PASSWORD}@{host}"}
    config["launch"] = {"setup": SETUP}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "MLFLOW_", "GLAMHPC_", "APPTAINER", "SINGULARITY"))
    }
    env.update(
        {
            "PATH": os.pathsep.join(
                [str(STANDINS), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
            ),
            "GLAMHPC_STANDIN_LOG": str(tmp_path / "standin.log"),
            "GLAMHPC_STANDIN_STATE": str(tmp_path / "standin-state"),
            "GLAMHPC_STATE_DIR": str(tmp_path / "state"),
            "GLAMHPC_CACHE": str(tmp_path / "cache"),
            "MLFLOW_TRACKING_PASSWORD": ENV_PASSWORD,
            "MLFLOW_TRACKING_TOKEN": ENV_TOKEN,
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "COLUMNS": "200",
        }
    )
    return env


def _glamhpc(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "glamhpc", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _leaks(text: str | bytes, where: str) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [f"{where}: {value}" for value in PLANTED if value.encode() in data]


def _files(*roots: Path, skip: tuple[Path, ...] = ()) -> list[Path]:
    return [
        p
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p not in skip
    ]


def _stored_leaks(server: MlflowServer, *roots: Path, skip: tuple[Path, ...] = ()) -> list[str]:
    """Planted values in every file under ``roots`` and the MLflow server's folder, once the
    job's last uploads (written after DONE) have landed."""
    server_root = Path(str(server.log_path)).parent
    deadline = time.monotonic() + 60
    while any(server_root.rglob(".artifact.uploading*")) and time.monotonic() < deadline:
        time.sleep(1)
    leaks = []
    for path in _files(*roots, server_root, skip=skip):
        try:
            leaks += _leaks(path.read_bytes(), str(path))
        except FileNotFoundError:  # a temporary file that was renamed while we looked
            continue
    return leaks


def test_dry_run_masks_setup_secrets_and_uri_credentials(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    env = _env(tmp_path)
    config = _config(tmp_path, mlflow_server)
    out = _glamhpc(tmp_path, env, "submit", str(config), "--executor", "slurm", "--dry-run")
    assert "#SBATCH" in out and "export HF_TOKEN=***" in out, out
    assert "export GLAMHPC_SETUP_RAN=1" in out  # what is not a secret stays readable
    assert _leaks(out, "dry-run output") == []
    assert _files(tmp_path, skip=(config,)) == []  # a dry run writes nothing


def test_a_submitted_container_job_writes_no_secret_anywhere(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    env = _env(tmp_path)
    config = _config(tmp_path, mlflow_server)
    image = tmp_path / "glamhpc.sif"
    _glamhpc(REPO, env, "build", "--engine", "apptainer", "--tag", str(image))
    _glamhpc(tmp_path, env, "models", "prefetch", "tiny-t5", "--cache", env["GLAMHPC_CACHE"])
    outputs = _glamhpc(
        tmp_path, env, "submit", str(config), "--executor", "local", "--run-name", "planted",
        "--container", str(image),
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "quickstart" / "planted"
    deadline = time.monotonic() + 400
    while not (run_dir / "DONE").exists() and time.monotonic() < deadline:
        time.sleep(2)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in run_dir.rglob("*.out"))
    assert (run_dir / "DONE").exists(), logs
    assert (run_dir / "mlflow_run_id").is_file(), logs  # tracked through the planted URI
    outputs += _glamhpc(tmp_path, env, "jobs")

    # The job really went through the engine, with the secrets in its environment only.
    standin_log = (tmp_path / "standin.log").read_text()
    assert '"exec"' in standin_log and "--cleanenv" in standin_log
    assert "MLFLOW_TRACKING_TOKEN" not in standin_log  # passed by name, outside the argv

    leaks = _leaks(outputs, "command output")
    assert leaks + _stored_leaks(mlflow_server, tmp_path, skip=(config,)) == []
    assert stat.S_IMODE((run_dir / "launch").stat().st_mode) == 0o700
    registry = tmp_path / "state" / "jobs.jsonl"
    assert stat.S_IMODE(registry.stat().st_mode) == 0o600


def test_training_stores_no_secret(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    """What the ranks write themselves (config.yaml, logs/tracking.json, the checkpoint's
    state.json, MLflow params and the config.yaml artifact), without a launcher in between."""
    env = _env(tmp_path)
    config = _config(tmp_path, mlflow_server)
    outputs = _glamhpc(tmp_path, env, "train", str(config), "--run-name", "direct")
    run_dir = tmp_path / "runs" / "quickstart" / "direct"
    assert (run_dir / "DONE").exists() and (run_dir / "mlflow_run_id").is_file()
    assert any(run_dir.rglob("state.json"))  # a checkpoint was written and searched
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["tracking"]["uri"] == mlflow_server.uri  # still usable, without credentials
    assert stored["launch"]["setup"][0] == "export HF_TOKEN=***"
    leaks = _leaks(outputs, "command output")
    assert leaks + _stored_leaks(mlflow_server, tmp_path, skip=(config,)) == []


def _slurm_reason() -> str | None:
    import shutil

    if shutil.which("sinfo") is None:
        return "no Slurm client on PATH (glamhpc cluster install && glamhpc cluster up)"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    if out.returncode != 0 or not any(
        s.rstrip("*~#") in ("idle", "mixed") for s in out.stdout.split()
    ):
        return "no Slurm cluster with an idle node (glamhpc cluster up)"
    return None


@pytest.mark.slurm
def test_a_slurm_job_keeps_its_setup_in_a_private_script_only(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    """sbatch needs the real setup lines: the batch script is the one file that holds them,
    readable by its owner only, in a folder only its owner can enter."""
    reason = _slurm_reason()
    if reason:
        if os.environ.get("GLAMHPC_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    env = _env(tmp_path)
    config = _config(tmp_path, mlflow_server)
    _glamhpc(tmp_path, env, "models", "prefetch", "tiny-t5", "--cache", env["GLAMHPC_CACHE"])
    outputs = _glamhpc(
        tmp_path, env, "submit", str(config), "--executor", "slurm", "--run-name", "on-slurm",
        "--time", "10",
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "quickstart" / "on-slurm"
    deadline = time.monotonic() + 400
    while not (run_dir / "DONE").exists() and time.monotonic() < deadline:
        time.sleep(2)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in run_dir.rglob("*.out"))
    assert (run_dir / "DONE").exists(), logs
    assert "GLAMHPC_SETUP_RAN" not in logs  # (the setup ran in the batch script, not printed)
    (script,) = (run_dir / "launch").glob("*_submission.sh")
    assert HF_TOKEN in script.read_text()  # the real setup runs
    assert stat.S_IMODE(script.stat().st_mode) == 0o600
    assert stat.S_IMODE((run_dir / "launch").stat().st_mode) == 0o700
    leaks = _leaks(outputs, "command output")
    assert leaks + _stored_leaks(mlflow_server, tmp_path, skip=(config, script)) == []


def test_a_sweep_parent_never_logs_a_swept_secret(sqlite_uri: str) -> None:
    """A sweep's definition goes to its parent run as params and to each child as tags: a
    secret set or swept there (here in launch.setup) is masked in both."""
    from glamhpc.tracking.runs import create_parent_run, sweep_tags
    from glamhpc.tracking.uri import client

    setup = f"export HF_TOKEN={HF_TOKEN}"
    run_id = create_parent_run(
        "sweeps", "s", uri=sqlite_uri, params={"launch.setup": [setup, "module load cuda"]}
    )
    logged = client(sqlite_uri).get_run(run_id).data.params["launch.setup"]
    assert HF_TOKEN not in logged and "***" in logged and "module load cuda" in logged
    assert HF_TOKEN not in sweep_tags({"launch.setup": setup})["sweep.launch.setup"]
