"""`glamhpc cluster` (root) trusts only a run folder that root alone can write.

The script signals the pids recorded in its folder and starts daemons from the configs there; in
a predictable folder another user created first, both are theirs to choose. These tests never
start a daemon: `down` on a planted folder must refuse before reading it, and the folder check
and the password helper run as shell functions taken from the script itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "glamhpc" / "data" / "slurm-cluster.sh"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the cluster script runs as root")


def _function(name: str) -> str:
    """One function of the script, by name (from `name() {` to the first `}` line)."""
    text = SCRIPT.read_text()
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", text, re.S | re.M)
    assert match, f"{name} is not defined in {SCRIPT}"
    return match.group(0)


def _call(function: str, run_dir: Path | str) -> subprocess.CompletedProcess[str]:
    helpers = 'log() { printf "%s\\n" "$*" >&2; }\ndie() { log "error: $*"; exit 1; }\n'
    body = f"set -euo pipefail\n{helpers}{_function(function)}\n"
    body += f'RUN_DIR="{run_dir}"\nDB_PASSWORD_FILE="$RUN_DIR/etc/db-password"\n{function}\n'
    return subprocess.run(["bash", "-c", body], capture_output=True, text=True, timeout=30)


def test_down_refuses_a_folder_planted_by_another_user(tmp_path: Path) -> None:
    planted = tmp_path / "cluster"
    (planted / "pids").mkdir(parents=True)
    victim = subprocess.Popen(["sleep", "60"])
    try:
        # "munged" running /usr/bin/sleep: what root would SIGTERM if it trusted this folder.
        sleep = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
        (planted / "pids" / "munged.pid").write_text(f"{victim.pid} {sleep}\n")
        for path in (planted, planted / "pids", planted / "pids" / "munged.pid"):
            os.chown(path, 65534, 65534)
        env = {**os.environ, "GLAMHPC_SLURM_DIR": str(planted)}
        out = subprocess.run(
            ["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 1, out.stderr
        assert "belongs to uid 65534" in out.stderr
        assert victim.poll() is None  # still running: nothing was signalled
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("case", ["symlink", "world-writable", "other-owner", "relative"])
def test_folder_check_refuses(tmp_path: Path, case: str) -> None:
    target = tmp_path / "cluster"
    if case == "symlink":
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    elif case == "world-writable":
        target.mkdir()
        target.chmod(0o777)
    elif case == "other-owner":
        target.mkdir()
        os.chown(target, 65534, 65534)
    out = _call("secure_run_dir", "relative/dir" if case == "relative" else target)
    assert out.returncode == 1 and "error:" in out.stderr, out.stderr


def test_folder_check_creates_a_root_owned_folder(tmp_path: Path) -> None:
    target = tmp_path / "cluster"
    out = _call("secure_run_dir", target)
    assert out.returncode == 0, out.stderr
    info = target.stat()
    assert info.st_uid == 0 and info.st_mode & 0o777 == 0o755
    writable_parent = tmp_path / "open"
    writable_parent.mkdir()
    writable_parent.chmod(0o777)
    out = _call("secure_run_dir", writable_parent / "cluster")
    assert out.returncode == 1 and "writable by other users" in out.stderr
    assert not (writable_parent / "cluster").exists()


def test_database_password_is_random_private_and_stable(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        (folder / "etc").mkdir(parents=True)
    one = _call("db_password", first)
    assert one.returncode == 0, one.stderr
    assert re.fullmatch(r"[A-Za-z0-9]{32}", one.stdout)
    assert (first / "etc" / "db-password").stat().st_mode & 0o777 == 0o600
    assert _call("db_password", first).stdout == one.stdout  # the database keeps using it
    assert _call("db_password", second).stdout != one.stdout
    text = SCRIPT.read_text()  # no fixed password left
    assert "IDENTIFIED BY 'glamhpc'" not in text and "StoragePass=glamhpc" not in text
