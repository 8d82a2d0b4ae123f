"""Test helper (not an app): start `cello` / app scripts as real process trees and clean up.

`cello_procs` is a pytest fixture: `cello_procs.start(args, cwd=..., env=...)` runs
`python -m cello ARGS` (or `script=` for an app script) in its own session with output in a log
file, and every started tree is SIGKILLed at teardown whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

APPS = Path(__file__).resolve().parent
ROOT = APPS.parent.parent
CLI_APP = APPS / "cli_app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def listening_inodes() -> set[str]:
    """Socket inodes in LISTEN state (TCP, v4 and v6) in this network namespace."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A":
                    inodes.add(cols[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                out.add(target[8:-1])
    return out


class Proc:
    def __init__(self, proc: subprocess.Popen, log_path: Path, port: int | None) -> None:
        self.proc, self.log_path, self.port = proc, log_path, port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def workers(self) -> list[int]:
        return children(self.pid)

    def wait_http(self, path: str = "/pid", timeout: float = 15.0) -> httpx.Response:
        """Until GET path answers (any status); fails with the log if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"exited with {self.proc.returncode} before serving\n{self.log()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(self.url(path), timeout=2)
            time.sleep(0.05)
        pytest.fail(f"not serving after {timeout} s\n{self.log()[-3000:]}")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.05)
        pytest.fail(f"{text!r} not logged within {timeout} s\n{self.log()[-3000:]}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {timeout} s\n{self.log()[-3000:]}")

    def kill(self) -> None:
        for p in reversed(tree(self.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)


def distinct_pids(proc: Proc, want: int, attempts: int = 300) -> set[int]:
    """GET /pid on fresh connections until `want` different pids answered (SO_REUSEPORT spreads them)."""
    seen: set[int] = set()
    for _ in range(attempts):
        resp = httpx.get(proc.url("/pid"), timeout=5, headers={"connection": "close"})
        seen.add(resp.json()["pid"])
        if len(seen) >= want:
            break
    return seen


class Procs:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(
        self,
        args: list[str],
        *,
        port: int | None = None,
        cwd: Path | str = ROOT,
        env: dict[str, str] | None = None,
        script: Path | str | None = None,
        console_script: bool = False,
    ) -> Proc:
        if console_script:
            cmd = [str(Path(sys.executable).parent / "cello"), *args]
        elif script is not None:
            cmd = [sys.executable, str(script), *args]
        else:
            cmd = [sys.executable, "-m", "cello", *args]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CELLO_") and k != "PORT"}
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        log_path = self.log_dir / f"proc-{len(self.started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        p = Proc(proc, log_path, port)
        self.started.append(p)
        return p

    def run(self, args: list[str], timeout: float = 20, **kw) -> tuple[int, str]:
        """Run to completion; returns (exit code, output)."""
        p = self.start(args, **kw)
        code = p.wait(timeout)
        return code, p.log()

    def cleanup(self) -> None:
        for p in self.started:
            p.kill()


@pytest.fixture
def cello_procs(tmp_path):
    procs = Procs(tmp_path)
    try:
        yield procs
    finally:
        procs.cleanup()
