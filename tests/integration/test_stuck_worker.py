"""Issue 9 item 2: a Python thread stuck in a handler (`time.sleep(1000)`) is visible and
stoppable. `/health/live` turns 503 after `worker_timeout`; the supervisor SIGKILLs and
replaces such a worker; SIGTERM and SIGINT end a single-process server within
`shutdown_timeout`; the hand-off queue is bounded (503 problem+json) and frees the body of a
timed-out request at once; a readiness check slower than `read_header` gives 503, not a cut
connection. Small timeouts (tests/apps/stuck_app.py): handler 1 s, read_header 1 s."""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import APPS, cello_procs, free_port, tree

__all__ = ["cello_procs"]  # the fixture
pytestmark = pytest.mark.timeout(60)

STUCK_APP = APPS / "stuck_app.py"
WORKER_TIMEOUT = 1.5
SHUTDOWN = 2.0


def start(cello_procs, *extra, workers=1, env=None):
    port = free_port()
    args = ["run", str(STUCK_APP), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--worker-timeout", str(WORKER_TIMEOUT), "--timeout-graceful-shutdown", str(SHUTDOWN), *extra]  # fmt: skip
    proc = cello_procs.start(args, port=port, env=env)
    proc.wait_http("/fast")
    return proc


def get(proc, path, timeout=10.0):
    return httpx.get(proc.url(path), timeout=timeout, headers={"connection": "close"})


def wedge(proc) -> socket.socket:
    """Send GET /sleep and leave it: the worker that takes it is stuck for 1000 s."""
    sock = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
    sock.sendall(b"GET /sleep HTTP/1.1\r\nHost: t\r\n\r\n")
    return sock


def wait_status(proc, path, status, timeout=10.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            last = get(proc, path, timeout=5)
            if last.status_code == status:
                return last
        time.sleep(0.1)
    pytest.fail(f"{path} did not answer {status} within {timeout} s (last: {last})\n{proc.log()[-3000:]}")


def rss(pid: int) -> int:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def test_liveness_turns_503_when_the_loop_is_stuck_and_sigterm_ends_it(cello_procs):
    proc = start(cello_procs)
    assert get(proc, "/health/live").status_code == 200
    sock = wedge(proc)
    try:
        # Routes time out as they should (the handler timeout is 1 s)...
        assert get(proc, "/fast").status_code == 504
        # ... and liveness notices the stuck loop.
        resp = wait_status(proc, "/health/live", 503, timeout=WORKER_TIMEOUT + 5)
        assert resp.json()["status"] == "DOWN"
        assert "event loop" in resp.json()["reason"]
        # Readiness needs the loop: 503 with a body once its checks time out, not an empty reply.
        ready = get(proc, "/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "DOWN"
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        proc.wait(SHUTDOWN + 4)
        took = time.monotonic() - started
        assert took < SHUTDOWN + 3, took
        assert "exiting now" in proc.log()
    finally:
        sock.close()


def test_sigint_also_ends_a_stuck_server(cello_procs):
    proc = start(cello_procs)
    sock = wedge(proc)
    try:
        wait_status(proc, "/health/live", 503, timeout=WORKER_TIMEOUT + 5)
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGINT)
        proc.wait(SHUTDOWN + 4)
        assert time.monotonic() - started < SHUTDOWN + 3
    finally:
        sock.close()


def test_second_signal_ends_a_stuck_server_at_once(cello_procs):
    proc = start(cello_procs)
    sock = wedge(proc)
    try:
        wait_status(proc, "/health/live", 503, timeout=WORKER_TIMEOUT + 5)
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # the second signal must come after the first was seen
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        proc.wait(SHUTDOWN)
        assert time.monotonic() - started < 1.5
    finally:
        sock.close()


def test_queue_is_bounded_and_timed_out_bodies_are_freed(cello_procs):
    proc = start(cello_procs, env={"STUCK_QUEUE": "30"})
    sock = wedge(proc)
    try:
        wait_status(proc, "/health/live", 503, timeout=WORKER_TIMEOUT + 5)
        before = rss(proc.pid)
        body = b"z" * (8 * 1024 * 1024)

        def upload(_):
            return httpx.post(proc.url("/upload"), content=body, timeout=15).status_code

        # 24 uploads of 8 MiB wait for the stuck thread, 4 at a time: each gets its 504
        # after 1 s. Kept, their bodies would add up to 192 MiB.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(upload, range(24)))
        assert statuses.count(504) == 24, statuses
        # Freed with their 504s (the jobs stay queued): at most a few rounds' worth in use.
        grown = rss(proc.pid) - before
        assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
        # 24 (+ the /sleep's earlier probes) are queued behind the stuck handler; the queue
        # holds 30: a few more fill it, then requests are refused at once.
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            more = list(pool.map(lambda _: get(proc, "/fast").status_code, range(10)))
        assert 503 in more, more
        started = time.monotonic()
        refused = get(proc, "/fast")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["status"] == 503
        assert time.monotonic() - started < 1.0  # at once, not after the 1 s handler timeout
    finally:
        sock.close()


def test_slow_readiness_check_is_503_not_a_cut_connection(cello_procs):
    proc = start(cello_procs)
    assert get(proc, "/health/ready").status_code == 200
    assert httpx.post(proc.url("/slow-check/1"), timeout=5).status_code == 200
    started = time.monotonic()
    ready = get(proc, "/health/ready")  # the check takes longer than read_header (1 s)
    assert ready.status_code == 503, ready.text
    assert ready.json()["status"] == "DOWN"
    assert time.monotonic() - started >= 1.0
    # The same keep-alive connection stays usable after a probe.
    with httpx.Client(timeout=5) as client:
        assert client.get(proc.url("/health/live")).status_code == 200
        time.sleep(1.5)  # longer than read_header: an idle keep-alive connection is not a slow head
        assert client.get(proc.url("/fast")).status_code == 200


def test_supervisor_replaces_a_worker_whose_loop_is_stuck(cello_procs):
    proc = start(cello_procs, workers=2)
    proc.wait_log("workers 2")
    old = set(proc.workers())
    assert len(old) == 2
    sock = wedge(proc)
    try:
        log = proc.wait_log("has not turned for", timeout=WORKER_TIMEOUT + 8)
        proc.wait_log("died unexpectedly (killed by SIGKILL)", timeout=5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = set(proc.workers())
            if len(now) == 2 and now != old:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no replacement: {proc.workers()}\n{proc.log()[-3000:]}")
        assert len(old - now) == 1
        dead = (old - now).pop()
        assert f"worker {dead}: its event loop has not turned" in log
        # The stuck request's connection is gone with its worker; the others serve.
        assert get(proc, "/fast").status_code == 200
    finally:
        sock.close()
