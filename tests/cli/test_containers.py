"""`glamhpc build` and `glamhpc doctor` end to end, with stand-in engines on PATH.

The CLI runs in a real subprocess (the installed console script) so that PATH lookups, the
streamed output of the engine and the exit codes are exactly what a user gets.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "bin"
VENV_BIN = Path(sys.executable).parent
GLAMHPC = [sys.executable, "-m", "glamhpc"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Stand-in engines first on PATH; no /usr/local/bin (a bare docker CLI may sit there)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GLAMHPC_", "MLFLOW_", "HF_", "SLURM_"))
    }
    return {
        **base,
        "PATH": os.pathsep.join([str(STANDINS), str(VENV_BIN), "/usr/bin", "/bin"]),
        "GLAMHPC_STANDIN_LOG": str(tmp_path / "standin.log"),
        "GLAMHPC_STANDIN_STATE": str(tmp_path / "state"),
        "GLAMHPC_CACHE": str(tmp_path / "glamhpc-cache"),
        "GLAMHPC_STANDIN_GPUS": "0",  # the stand-in nvidia-smi lists no GPU unless a test asks
        "COLUMNS": "250",
    }


def no_engines(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """PATH with Python but no container engine at all."""
    bare = tmp_path / "bare-bin"
    bare.mkdir(exist_ok=True)
    for tool in ("git", "sh"):
        if not (bare / tool).exists():
            os.symlink(f"/usr/bin/{tool}", bare / tool)
    return {**env, "PATH": os.pathsep.join([str(bare), str(VENV_BIN)])}


def glamhpc(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GLAMHPC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def log_of(env: dict[str, str]) -> list[dict]:
    path = Path(env["GLAMHPC_STANDIN_LOG"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- build


def test_build_prints_runs_and_streams_the_docker_build(env: dict[str, str]) -> None:
    result = glamhpc("build", "--tag", "glamhpc:cli-test", env=env)
    assert result.returncode == 0, result.stderr
    printed = next(line for line in result.stdout.splitlines() if line.startswith("$ "))
    (call,) = log_of(env)
    assert call["engine"] == "docker" and call["cwd"] == str(ROOT)
    import shlex

    assert shlex.split(printed[2:]) == ["docker", *call["argv"]]
    assert "--tag" in call["argv"] and "glamhpc:cli-test" in call["argv"]
    # The engine's own output came through, after the command line.
    assert "Step 1/" in result.stdout
    assert result.stdout.index("$ docker build") < result.stdout.index("Step 1/")
    assert "built glamhpc:cli-test" in result.stdout


def test_build_with_apptainer_writes_the_sif(tmp_path: Path, env: dict[str, str]) -> None:
    sif = tmp_path / "out.sif"
    result = glamhpc(
        "build", "--engine", "apptainer", "--tag", str(sif), "--base-image", "b:1", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "Build complete" in result.stdout
    image = json.loads(sif.read_text())
    assert image["build_args"]["FROM"] == "b:1" and image["build_args"]["BOOTSTRAP"] == "docker"


def test_build_from_a_docker_image_with_apptainer(tmp_path: Path, env: dict[str, str]) -> None:
    sif = tmp_path / "conv.sif"
    result = glamhpc(
        "build",
        "--engine",
        "apptainer",
        "--from-image",
        "glamhpc:0.1.0",
        "--tag",
        str(sif),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    args = json.loads(sif.read_text())["build_args"]
    assert (args["BOOTSTRAP"], args["FROM"]) == ("docker-daemon", "glamhpc:0.1.0")


def test_build_without_any_engine_fails_clearly(tmp_path: Path, env: dict[str, str]) -> None:
    result = glamhpc("build", env=no_engines(tmp_path, env))
    assert result.returncode == 2
    assert "no container engine found on PATH" in result.stderr
    assert "module load apptainer" in result.stderr
    result = glamhpc("build", "--engine", "podman", env=no_engines(tmp_path, env))
    assert result.returncode == 2 and "'podman' is not on PATH" in result.stderr


def test_dry_run_prints_without_running(tmp_path: Path, env: dict[str, str]) -> None:
    result = glamhpc("build", "--dry-run", "--engine", "apptainer", env=no_engines(tmp_path, env))
    assert result.returncode == 0, result.stderr
    assert "$ apptainer build --build-arg BOOTSTRAP=docker" in result.stdout
    assert "containers/glamhpc.def" in result.stdout
    assert log_of(env) == []


def test_a_failing_build_fails_with_its_exit_code(tmp_path: Path, env: dict[str, str]) -> None:
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "docker").write_text("#!/bin/sh\necho 'Step 1/3 : FROM nowhere'\nexit 3\n")
    (fake / "docker").chmod(0o755)
    result = glamhpc("build", env={**env, "PATH": f"{fake}:{env['PATH']}"})
    assert result.returncode == 3
    assert "Step 1/3 : FROM nowhere" in result.stdout
    assert "docker build failed (exit 3)" in result.stderr


def _hub_model(cache: Path, repo_id: str) -> None:
    folder = cache / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("abc123")
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (snapshot / name).write_text("{}")


def test_bake_model_stages_the_weights_for_the_build_only(
    tmp_path: Path, env: dict[str, str]
) -> None:
    cache = tmp_path / "hf"
    _hub_model(cache, "google/flan-t5-small")
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    seen = tmp_path / "bake-during-build.txt"
    # A docker that reports what the build context's bake folder holds while it builds.
    (fake / "docker").write_text(
        f"#!/bin/sh\ncd containers/bake && find . -type f | sort > {seen}\n"
    )
    (fake / "docker").chmod(0o755)
    result = glamhpc(
        "build",
        "--bake-model",
        "google/flan-t5-small",
        "--cache",
        str(cache),
        env={**env, "PATH": f"{fake}:{env['PATH']}"},
    )
    assert result.returncode == 0, result.stderr
    assert "BAKED_MODEL=google/flan-t5-small" in result.stdout
    assert seen.read_text().split() == [
        "./.gitignore",
        "./hub/models--google--flan-t5-small/refs/main",
        "./hub/models--google--flan-t5-small/snapshots/abc123/config.json",
        "./hub/models--google--flan-t5-small/snapshots/abc123/model.safetensors",
        "./hub/models--google--flan-t5-small/snapshots/abc123/tokenizer.json",
    ]
    assert sorted(p.name for p in (ROOT / "containers" / "bake").iterdir()) == [".gitignore"]


def test_bake_model_that_is_not_prefetched(tmp_path: Path, env: dict[str, str]) -> None:
    result = glamhpc(
        "build", "--bake-model", "google/flan-t5-xl", "--cache", str(tmp_path / "hf"), env=env
    )
    assert result.returncode == 2
    assert "glamhpc models prefetch google/flan-t5-xl --cache" in result.stderr
    assert log_of(env) == []
    result = glamhpc("build", "--bake-model", "tiny-t5", env=env)
    assert result.returncode == 2 and "nothing to bake" in result.stderr


# ----------------------------------------------------------------------------- doctor


def doctor(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, dict[str, dict]]:
    result = glamhpc("doctor", "--json", *args, env=env, cwd=cwd)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    return result.returncode, checks


def test_doctor_ready_for_local_cpu_runs(tmp_path: Path, env: dict[str, str]) -> None:
    code, checks = doctor(env=env, cwd=tmp_path)
    assert code == 0, checks
    assert checks["run dir"]["status"] == "ok"
    assert (
        checks["MLflow"]["status"] == "ok" and "sqlite:///mlflow.db" in checks["MLflow"]["detail"]
    )
    assert checks["model cache"]["status"] == "ok" and "tiny-t5" in checks["model cache"]["detail"]
    assert "apptainer" in checks["container engine"]["detail"]


def test_doctor_table_shows_fixes_and_fails(tmp_path: Path, env: dict[str, str]) -> None:
    env = no_engines(tmp_path, env)
    result = glamhpc(
        "doctor", "--set", "launch.executor=slurm", "--set", "train.run_root=/dev/null/runs",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    out = result.stdout
    assert "glamhpc doctor" in out and "missing" in out
    assert "sbatch not on PATH" in out and "module load slurm" in out
    assert "/dev/null/runs is not writable" in out
    assert "2 required item(s) missing" in out


def test_doctor_container_image_checks(tmp_path: Path, env: dict[str, str]) -> None:
    code, checks = doctor("--set", "launch.container=absent.sif", env=env, cwd=tmp_path)
    assert code == 1
    assert checks["container engine"]["status"] == "missing"
    assert "glamhpc build --engine apptainer --tag absent.sif" in checks["container engine"]["fix"]
    (tmp_path / "img.sif").write_text("{}")
    code, checks = doctor("--set", "launch.container=img.sif", env=env, cwd=tmp_path)
    assert code == 0 and "apptainer version" in checks["container engine"]["detail"]
    code, checks = doctor(
        "--set", "launch.container=img.sif", env=no_engines(tmp_path, env), cwd=tmp_path
    )
    assert code == 1 and "needs apptainer or singularity" in checks["container engine"]["detail"]
    code, checks = doctor("--set", "launch.container=glamhpc:nope", env=env, cwd=tmp_path)
    assert code == 1 and "is not there" in checks["container engine"]["detail"]


def test_doctor_model_cache(tmp_path: Path, env: dict[str, str]) -> None:
    cache = tmp_path / "hf"
    sets = ["--set", "model.name=google/flan-t5-small", "--set", f"model.cache_dir={cache}"]
    code, checks = doctor(*sets, env=env, cwd=tmp_path)
    assert code == 1
    model = checks["model cache"]
    assert model["status"] == "missing" and "not prefetched" in model["detail"]
    assert f"glamhpc models prefetch google/flan-t5-small --cache {cache}" in model["fix"]
    assert checks["HF offline mode"]["status"] == "warn"
    _hub_model(cache, "google/flan-t5-small")
    code, checks = doctor(*sets, env={**env, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    assert code == 0, checks
    assert checks["model cache"]["status"] == "ok"
    assert checks["HF offline mode"]["status"] == "ok"


def test_doctor_gpus(tmp_path: Path, env: dict[str, str]) -> None:
    sets = ["--set", "launch.gpus_per_node=1"]
    env = {**env, "GLAMHPC_STANDIN_GPUS": "1"}
    # A driver (stand-in nvidia-smi) but a CPU torch: required locally, with the right fix.
    code, checks = doctor(*sets, env=env, cwd=tmp_path)
    assert code == 1
    gpus = checks["GPUs"]
    assert "nvidia-smi lists 1" in gpus["detail"] and "torch does not" in gpus["fix"]
    # On a Slurm login node GPUs are not required (they are on the compute nodes).
    fake = tmp_path / "slurm-bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\necho 'slurm 22.05.8'\n")
    (fake / "sbatch").chmod(0o755)
    login = {**env, "PATH": f"{fake}:{env['PATH']}"}
    code, checks = doctor(*sets, "--set", "launch.executor=slurm", env=login, cwd=tmp_path)
    assert code == 0, checks
    assert checks["GPUs"]["status"] == "warn" and checks["slurm (sbatch)"]["status"] == "ok"
    # Inside a job allocation they are required again.
    code, _ = doctor(
        *sets, "--set", "launch.executor=slurm", env={**login, "SLURM_JOB_ID": "7"}, cwd=tmp_path
    )
    assert code == 1


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_doctor_mlflow_server(tmp_path: Path, env: dict[str, str], health_server: str) -> None:
    code, checks = doctor(env={**env, "MLFLOW_TRACKING_URI": health_server}, cwd=tmp_path)
    assert code == 0 and "answers (HTTP 200)" in checks["MLflow"]["detail"]
    down = f"http://127.0.0.1:{_closed_port()}"
    code, checks = doctor("--set", f"tracking.uri={down}", env=env, cwd=tmp_path)
    assert code == 1
    assert checks["MLflow"]["status"] == "missing" and "unreachable" in checks["MLflow"]["detail"]
    assert "mlflow server" in checks["MLflow"]["fix"]
    code, checks = doctor("--set", "tracking.enabled=false", "--set", f"tracking.uri={down}",
                          env=env, cwd=tmp_path)  # fmt: skip
    assert code == 0


def test_doctor_bad_config_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    result = glamhpc("doctor", "--set", "launch.executer=slurm", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key 'launch.executer'" in result.stderr
