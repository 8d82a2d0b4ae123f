"""Issue 8 item 7 (ClusterConfig is honoured by app.run() and cello run) and issue 9 item 5 (crash
loops never become outages: restarts go on with capped backoff; only a worker that never became
ready at start-up ends the supervisor, with exit 3)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port

__all__ = ["cello_procs"]  # the fixture
pytestmark = pytest.mark.timeout(90)

APP = """\
import os, time
from cello import App, ClusterConfig

app = App()
app.enable_prometheus()
app.set_cluster(ClusterConfig({cluster}))


@app.on_event("startup")
def startup():
    if os.environ.get("CELLO_TEST_FAIL_STARTUP"):
        raise RuntimeError("database unreachable (test)")


@app.get("/pid")
def pid(request):
    return {{"pid": os.getpid()}}


@app.get("/slow", blocking=True)
def slow(request):
    time.sleep(float(request.query.get("s", "5")))
    return {{"slept": True}}


if __name__ == "__main__":
    app.run()
"""


def app_file(tmp_path: Path, cluster: str) -> Path:
    path = tmp_path / "cluster_app.py"
    path.write_text(textwrap.dedent(APP.format(cluster=cluster)))
    return path


def start(cello_procs, path: Path, *extra: str, script: bool = False, env=None):
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), *extra]
    if script:
        proc = cello_procs.start(args, port=port, script=path, env=env)
    else:
        proc = cello_procs.start(["run", str(path), *args], port=port, env=env)
    proc.wait_log("Cello serving")
    proc.wait_http()
    return proc


def cpus_allowed(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def get(proc, path: str, timeout: float = 5.0) -> httpx.Response:
    return httpx.get(proc.url(path), timeout=timeout, headers={"connection": "close"})


# ---- workers and cpu_affinity --------------------------------------------------------------------


@pytest.mark.parametrize("script", [False, True], ids=["cello-run", "app-run"])
def test_cluster_workers_and_cpu_affinity(cello_procs, tmp_path, script):
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs to tell pinned workers apart")
    proc = start(cello_procs, app_file(tmp_path, "workers=2, cpu_affinity=True"), script=script)
    assert "workers 2" in proc.log()
    workers = proc.workers()
    assert len(workers) == 2
    pinned = sorted(cpus_allowed(pid) for pid in workers)
    assert pinned == sorted(str(c) for c in allowed[:2]), pinned
    # Threads started after the pin (tokio, the pool) inherit it.
    for pid in workers:
        for tid in os.listdir(f"/proc/{pid}/task"):
            assert cpus_allowed_task(pid, int(tid)) in {str(c) for c in allowed[:2]}
    # A replacement is pinned like the worker it replaces.
    victim = workers[0]
    before = cpus_allowed(victim)
    os.kill(victim, signal.SIGKILL)
    new = wait_replaced(proc, victim, timeout=10)  # serving, so pinned long ago
    assert cpus_allowed(new) == before


def cpus_allowed_task(pid: int, tid: int) -> str:
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


def test_cpu_affinity_pins_a_single_process_server(cello_procs, tmp_path):
    proc = start(cello_procs, app_file(tmp_path, "workers=1, cpu_affinity=True"))
    assert cpus_allowed(proc.pid) == str(sorted(os.sched_getaffinity(0))[0])


def test_without_cpu_affinity_workers_keep_every_cpu(cello_procs, tmp_path):
    proc = start(cello_procs, app_file(tmp_path, "workers=2"))
    mine = cpus_allowed(os.getpid())
    assert [cpus_allowed(pid) for pid in proc.workers()] == [mine, mine]


def test_flags_beat_the_cluster_config(cello_procs, tmp_path):
    proc = start(cello_procs, app_file(tmp_path, "workers=2"), "--workers", "1")
    assert "workers 1" in proc.log()
    assert proc.workers() == []  # served in-process, no supervisor


# ---- shutdown ------------------------------------------------------------------------------------


def sigterm_during_a_slow_request(proc) -> tuple[float, list]:
    result: list = []

    def call():
        try:
            result.append(get(proc, "/slow?s=6", timeout=15).status_code)
        except httpx.TransportError as exc:
            result.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.5)
    began = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    took = time.monotonic() - began
    t.join(10)
    return took, result


@pytest.mark.parametrize("workers", [1, 2])
def test_shutdown_timeout_bounds_the_drain(cello_procs, tmp_path, workers):
    proc = start(cello_procs, app_file(tmp_path, f"workers={workers}, shutdown_timeout=1"))
    took, _ = sigterm_during_a_slow_request(proc)
    assert took < 4.5, took  # the handler would take 6 s; 1 s drain + shutdown hooks


def test_graceful_shutdown_false_stops_without_a_drain(cello_procs, tmp_path):
    proc = start(cello_procs, app_file(tmp_path, "workers=2, graceful_shutdown=False, shutdown_timeout=30"))
    took, _ = sigterm_during_a_slow_request(proc)
    assert took < 3.5, took


def test_graceful_shutdown_waits_for_the_request(cello_procs, tmp_path):
    proc = start(cello_procs, app_file(tmp_path, "workers=2, shutdown_timeout=20"))
    took, result = sigterm_during_a_slow_request(proc)
    assert result == [200], result
    assert took > 4, took


# ---- restarts ------------------------------------------------------------------------------------


def wait_replaced(proc, victim: int, timeout: float) -> int:
    """Until the victim's replacement exists and serves; returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = proc.workers()
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"worker {victim} not replaced within {timeout} s\n{proc.log()[-3000:]}")
    new = max(now, key=lambda pid: os.stat(f"/proc/{pid}").st_mtime)
    while time.monotonic() < deadline:
        if get(proc, "/pid").json()["pid"] == new:
            return new
    pytest.fail(f"worker {new} never answered\n{proc.log()[-3000:]}")


def test_seven_sigkills_within_a_minute_keep_the_port_serving(cello_procs, tmp_path):
    """An OOM killer's burst: beyond max_restarts (5) restarts slow down, they never stop."""
    proc = start(cello_procs, app_file(tmp_path, "workers=2"))
    began = time.monotonic()
    failures = 0
    for n in range(7):
        victim = proc.workers()[n % 2]
        os.kill(victim, signal.SIGKILL)
        # Meanwhile the other worker answers.
        for _ in range(5):
            try:
                assert get(proc, "/pid").status_code == 200
            except httpx.TransportError:
                failures += 1  # the connection the kernel had queued on the dead worker
        wait_replaced(proc, victim, timeout=12)
    assert time.monotonic() - began < 60
    assert failures <= 7, failures
    assert proc.proc.poll() is None, proc.log()[-3000:]
    log = proc.log()
    assert "restarts are slowed to one per 5 s per worker" in log, log[-3000:]
    assert "restarting in 5.0 s" in log
    assert "giving up" not in log
    for _ in range(4):
        assert get(proc, "/pid").status_code == 200
    text = get(proc, "/metrics").text
    assert metric(text, "cello_worker_restarts_total") == 7
    assert metric(text, "cello_workers") == 2


def test_cluster_max_restarts_is_the_quick_restart_budget(cello_procs, tmp_path):
    proc = start(cello_procs, app_file(tmp_path, "workers=2, max_restarts=0"))
    victim = proc.workers()[0]
    os.kill(victim, signal.SIGKILL)
    proc.wait_log(f"worker {victim} died unexpectedly (killed by SIGKILL); restarting in 5.0 s")
    proc.wait_log("1 worker crashes within 60 s (max restarts 0)")
    assert get(proc, "/pid").status_code == 200
    wait_replaced(proc, victim, timeout=10)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_worker_failing_at_startup_exits_3(cello_procs, tmp_path, workers):
    path = app_file(tmp_path, "workers=2")
    code, out = cello_procs.run(["run", str(path), "--port", "0", "--workers", workers],
                                env={"CELLO_TEST_FAIL_STARTUP": "1"})  # fmt: skip
    assert code == 3, out
    reasons = [line for line in out.splitlines() if line.startswith("cello: the app failed to start:")]
    assert reasons == ["cello: the app failed to start: RuntimeError: database unreachable (test)"], out


def test_worker_failing_at_import_exits_3(cello_procs, tmp_path):
    (tmp_path / "broken.py").write_text(
        "from cello import App, ClusterConfig\napp = App()\napp.set_cluster(ClusterConfig(workers=2))\n"
        "import no_such_driver_xyz\n"
    )
    code, out = cello_procs.run(["run", "broken:app"], cwd=tmp_path)
    assert code == 3, out
    assert "No module named 'no_such_driver_xyz'" in out, out
