"""Shared fixtures: start the apps under tests/apps as real server processes on free ports, and
import them in-process for `cello.testing.TestClient`.

`serve("routing_app", "--debug", env={...})` starts `python tests/apps/routing_app.py --port N
--debug` (once per distinct argument set and test module; `fresh=True` always starts a new one),
waits until the port accepts TCP connections and returns a `Server`. Every process is stopped
at the end of its module (SIGTERM, then SIGKILL after 5 s). Server output goes to a log file
whose tail is attached to the report of a failing test that used the server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
APPS_DIR = TESTS_DIR / "apps"
STARTUP_TIMEOUT = 20.0
STOP_GRACE = 5.0

# Helper modules of the integration suite (rawhttp) are importable whatever pytest's import mode.
if str(TESTS_DIR / "integration") not in sys.path:
    sys.path.insert(0, str(TESTS_DIR / "integration"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until a TCP connect to host:port succeeds; raise RuntimeError if `proc` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def rss_bytes(pid: int) -> int:
    """Resident set size of a process and all its descendants (workers), in bytes."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


@dataclass
class Server:
    """A running app process. `str(server)` and `server.base_url` are `http://127.0.0.1:PORT`."""

    name: str
    host: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.base_url

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def connect(self, timeout: float = 5.0):
        from rawhttp import Conn

        return Conn(self.host, self.port, timeout=timeout)

    def stop(self, timeout: float = STOP_GRACE) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL the whole tree. Returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                for p in reversed(process_tree(self.proc.pid)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.proc.returncode


def start_server(app_name: str, *args: str, env: dict[str, str] | None = None, log_dir: Path) -> Server:
    app_file = APPS_DIR / f"{app_name}.py"
    assert app_file.exists(), f"no such test app: {app_file}"
    port = free_port()
    host = "127.0.0.1"
    log_path = log_dir / f"{app_name}-{port}.log"
    proc_env = dict(os.environ)
    proc_env["PYTHONUNBUFFERED"] = "1"
    proc_env.update(env or {})
    cmd = [sys.executable, str(app_file), "--port", str(port), *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=proc_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(app_name, host, port, proc, log_path, tuple(args), dict(env or {}))
    try:
        wait_for_port(host, port, STARTUP_TIMEOUT, proc)
    except RuntimeError as exc:
        server.stop(timeout=1)
        pytest.fail(f"{' '.join(cmd)}: {exc}\n--- server output ---\n{server.log()[-6000:]}", pytrace=False)
    return server


class ServerFactory:
    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.shared: dict[tuple, Server] = {}
        self.all: list[Server] = []

    def __call__(self, app_name: str, *args: str, env: dict[str, str] | None = None, fresh: bool = False) -> Server:
        key = (app_name, args, tuple(sorted((env or {}).items())))
        if not fresh:
            server = self.shared.get(key)
            if server is not None and server.alive():
                return server
        server = start_server(app_name, *args, env=env, log_dir=self.log_dir)
        self.all.append(server)
        if not fresh:
            self.shared[key] = server
        return server

    def stop_all(self) -> None:
        for server in self.all:
            server.stop()


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """Factory: `serve(app_name, *extra_args, env=None, fresh=False) -> Server`.

    Module-scoped: servers are shared by the tests of one module and stopped when it ends."""
    factory = ServerFactory(tmp_path_factory.mktemp("server-logs"))
    yield factory
    factory.stop_all()


_loaded_apps: dict[str, object] = {}


def load_app_module(app_name: str):
    """Import tests/apps/<app_name>.py in-process (once) and return the module."""
    if app_name not in _loaded_apps:
        path = APPS_DIR / f"{app_name}.py"
        spec = importlib.util.spec_from_file_location(f"cello_test_apps.{app_name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded_apps[app_name] = module
    return _loaded_apps[app_name]


@pytest.fixture(scope="session")
def load_app():
    """`load_app("routing_app")` -> the imported module (its `.app` is the App)."""
    return load_app_module


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for name, value in funcargs.items():
        if isinstance(value, Server):
            state = "running" if value.alive() else f"exited with {value.proc.returncode}"
            report.sections.append((f"server {value.name} ({name}, {state}) log tail", value.log()[-4000:]))
