"""`glamhpc tracking-server` as a real foreground process, for the shutdown, auth and PostgreSQL
tests: started in its own session, ready when /health answers, and what it leaves behind
(listeners on its port, processes of the server's group) found through psutil, independently
of what the command prints."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests


class ServerCli:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "glamhpc", "tracking-server", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, port: int, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.output()}")
            # Ready: the server answers, and the command has printed what it started.
            if "stops it." in self.output():
                try:
                    if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                        return
                except requests.exceptions.RequestException:
                    pass
            time.sleep(0.5)
        self.kill()
        raise AssertionError(f"no answer within {timeout_s} s:\n{self.output()}")

    def signal(self, sig: int, timeout_s: float = 60.0) -> int:
        os.kill(self.process.pid, sig)
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self._out.close()

    def kill(self) -> None:
        """Last-resort cleanup for a failed test: the CLI and every group it started."""
        groups = {self.process.pid} | descendant_groups(self.process.pid)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._out.close()


def listeners(port: int) -> set[int]:
    """Pids listening on TCP ``port`` (any address)."""
    return {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    }


def descendant_groups(pid: int) -> set[int]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    groups = set()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(child.pid))
    return groups


def alive_in_group(pgid: int) -> list[str]:
    """Command lines of the processes still in process group ``pgid``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(proc.info["cmdline"] or []))
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return found


def all_cmdlines() -> list[str]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        out.append(" ".join(proc.info["cmdline"] or []))
    return out
