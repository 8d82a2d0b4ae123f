"""Issue 3, item 5 (reload): `cello dev`, `--reload` and `app.run(reload=True)` serve from a fresh
process and start a new one within a second of a .py change; a syntax error is survived."""

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port

__all__ = ["cello_procs"]  # the fixture
pytestmark = pytest.mark.timeout(30)

APP_SOURCE = """
import os
from cello import App

app = App()


@app.get("/v")
def version(request):
    return {{"version": {version!r}, "pid": os.getpid()}}


if __name__ == "__main__":
    app.run(reload=True)
"""


def write(path: Path, text: str) -> None:
    """Write and make sure the mtime moves even within the filesystem's timestamp granularity."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns <= before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def get_v(proc) -> dict | None:
    try:
        return httpx.get(proc.url("/v"), timeout=2).json()
    except httpx.TransportError:
        return None


def wait_version(proc, version: str, timeout: float) -> float:
    """Seconds until /v reports `version`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        body = get_v(proc)
        if body and body["version"] == version:
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"version {version!r} not served within {timeout} s\n{proc.log()[-3000:]}")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "app.py").write_text(APP_SOURCE.format(version="v1"))
    return tmp_path


def start_dev(cello_procs, project):
    port = free_port()
    proc = cello_procs.start(["dev", "app:app", "--port", str(port)], cwd=project, port=port)
    proc.wait_http("/v")
    return proc


def test_edit_serves_new_code_from_a_new_process(cello_procs, project):
    proc = start_dev(cello_procs, project)
    first = get_v(proc)
    assert first["version"] == "v1"
    assert first["pid"] != proc.pid  # the reloader does not serve
    write(project / "app.py", APP_SOURCE.format(version="v2"))
    elapsed = wait_version(proc, "v2", 5)
    assert elapsed < 1.5, f"took {elapsed:.2f} s"
    assert get_v(proc)["pid"] != first["pid"]
    assert "changed: app.py; restarting" in proc.log()


def test_syntax_error_is_survived(cello_procs, project):
    proc = start_dev(cello_procs, project)
    write(project / "app.py", "def broken(:\n")
    proc.wait_log("server process exited (code 3); waiting for a change")
    assert "SyntaxError" in proc.log()
    assert proc.proc.poll() is None  # the reloader keeps watching
    write(project / "app.py", APP_SOURCE.format(version="fixed"))
    assert wait_version(proc, "fixed", 5) < 1.5


def test_ignored_directories_do_not_restart(cello_procs, project):
    proc = start_dev(cello_procs, project)
    pid = get_v(proc)["pid"]
    for d in (".venv", "node_modules", ".git", "target", "__pycache__"):
        (project / d).mkdir()
        (project / d / "mod.py").write_text("x = 1\n")
    (project / "notes.txt").write_text("not python")
    time.sleep(1.0)
    assert get_v(proc)["pid"] == pid
    assert "restarting" not in proc.log()


def test_app_run_reload_reexecutes_the_script(cello_procs, project):
    port = free_port()
    proc = cello_procs.start(["--port", str(port)], script=project / "app.py", cwd=project, port=port)
    proc.wait_http("/v")
    first = get_v(proc)
    assert first["version"] == "v1" and first["pid"] != proc.pid
    write(project / "app.py", APP_SOURCE.format(version="v2"))
    assert wait_version(proc, "v2", 5) < 1.5


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_and_exits_0(cello_procs, project, sig):
    proc = start_dev(cello_procs, project)
    server_pid = get_v(proc)["pid"]
    proc.proc.send_signal(sig)
    assert proc.wait(10) == 0
    time.sleep(0.1)
    assert not Path(f"/proc/{server_pid}").exists()
