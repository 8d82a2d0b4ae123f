"""Sync handlers on the I/O thread (`CELLO_INLINE`, issue 19): a plain ``def`` handler that
proved fast on the loop thread (16 calls in a row under 1 ms) runs on the I/O thread that read
the request, with no hand-off; a slow call sends it back. Each route of `inline_app` says which
thread ran it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_for_port

ON = {"CELLO_INLINE": "on"}
LEARN = 16  # fast calls on the loop thread before a route moves


def until_io(client: httpx.Client, path: str, limit: int = LEARN + 40, **kw) -> list[str]:
    """Call until a response says "io". A route that runs inline still goes to the loop thread
    while that thread drains its queue (here: access-log records), so not every call after
    the move is inline."""
    out: list[str] = []
    while len(out) < limit and "io" not in out:
        out += threads(client, path, 1, **kw)
    return out


def threads(client: httpx.Client, path: str, n: int, **kw) -> list[str]:
    out = []
    for _ in range(n):
        r = client.get(path, **kw)
        assert r.status_code == 200, r.text
        out.append(r.json()["thread"])
    return out


@pytest.fixture
def server(serve):
    return serve("inline_app", "--log-level", "info", env=ON, fresh=True)


def test_a_fast_sync_handler_moves_to_the_io_thread(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        seen = threads(client, "/fast", LEARN + 24)
    assert seen[:LEARN] == ["loop"] * LEARN, seen
    assert seen[LEARN:].count("io") >= 12, seen


def test_a_slow_handler_stays_on_the_loop_thread(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        seen = threads(client, "/slow", 40)
    # Adaptive offload moves it to the pool after three slow calls; never to the I/O thread.
    assert "io" not in seen, seen


def test_a_slow_call_sends_the_route_back(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert until_io(client, "/sometimes")[-1] == "io"
        # One slow call on the I/O thread: then the route is back on the loop thread and
        # needs twice as many fast calls to move again.
        assert until_io(client, "/sometimes", params={"ms": 20})[-1] == "io"
        again = threads(client, "/sometimes", 2 * LEARN)
        assert again == ["loop"] * (2 * LEARN), again
        assert until_io(client, "/sometimes")[-1] == "io"
    assert "handler sometimes took" in server.log()
    assert "runs on the loop thread again" in server.log()


def test_errors_bodies_and_results_that_need_the_loop(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        # An exception raised on the I/O thread is mapped there (problem+json, the status).
        until_io(client, "/sometimes")
        for _ in range(20):
            r = client.get("/sometimes", params={"fail": 1})
            assert r.status_code == 418
            assert r.headers["content-type"] == "application/problem+json"
            if "io thread" in r.json()["detail"]:
                break
        else:
            raise AssertionError("no failing call ran on the I/O thread")
        # A body is read before the handler runs inline.
        sizes = []
        for i in range(LEARN + 20):
            r = client.post("/echo", content=b"x" * (i * 1000))
            assert r.status_code == 200
            assert r.json()["n"] == i * 1000
            sizes.append(r.json()["thread"])
        assert "io" in sizes, sizes
        # An iterator result is pumped on the loop thread; the route then stays there.
        bodies = [client.get("/lines").text for _ in range(LEARN + 20)]
        assert all(b.endswith("\ntwo\nthree\n") for b in bodies), bodies
        assert [b.split("\n")[0] for b in bodies].count("io") == 1, bodies
        assert bodies[-1].startswith("loop"), bodies
        # A `def` returning a coroutine, and an `async def`, never leave the loop thread.
        for _ in range(LEARN + 4):
            r = client.get("/returns-coroutine")
            assert r.json() == {"thread": "loop", "awaited": True}
        assert set(threads(client, "/async", LEARN + 4)) == {"loop"}


def test_inline_and_loop_requests_side_by_side(server):
    """Concurrent clients on inline and loop routes: every answer right, none lost."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        until_io(client, "/fast")
    errors: list[str] = []
    seen: dict[str, set[str]] = {"/fast": set(), "/async": set()}

    def hammer(path: str) -> None:
        with httpx.Client(base_url=server.base_url, timeout=10) as c:
            for _ in range(150):
                r = c.get(path)
                if r.status_code != 200:
                    errors.append(f"{path}: {r.status_code} {r.text}")
                    return
                seen[path].add(r.json()["thread"])

    pool = [threading.Thread(target=hammer, args=(p,)) for p in ("/fast", "/async") * 4]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not errors, errors
    assert "io" in seen["/fast"], seen
    assert seen["/async"] == {"loop"}, seen


def test_a_stop_with_routes_inline_drains_and_exits_0(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert until_io(client, "/fast")[-1] == "io"
    assert server.stop() == 0, server.log()[-3000:]


APP = Path(__file__).resolve().parents[1] / "apps" / "inline_app.py"


def run_app(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(APP), "--port", str(port), *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, port


def stop(proc: subprocess.Popen) -> str:
    """Stop the app; what it printed."""
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=30)[0].decode(errors="replace")


@pytest.mark.parametrize(("mode", "moves"), [("auto", True), ("off", False)])
def test_auto_turns_it_on_when_workers_fill_the_cpus(mode, moves):
    """`auto`: on when the workers are at least the CPUs the process may use (here every
    worker has one); `off`: never."""
    cpus = len(os.sched_getaffinity(0))
    proc, port = run_app("--workers", str(cpus), "--no-access-log", env={"CELLO_INLINE": mode})
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
        # Connections spread over the workers; each learns on its own.
        seen = []
        for _ in range(4 * cpus):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                seen.append(until_io(client, "/fast")[-1])
        assert ("io" in seen) is moves, seen
    finally:
        stop(proc)


def test_auto_runs_inline_with_the_access_log_and_logs_every_request():
    """Access records wait for a timed flush instead of waking the loop thread per batch, so
    `auto` runs inline with the access log on, and every request, inline or not, is logged."""
    cpus = len(os.sched_getaffinity(0))
    proc, port = run_app("--workers", str(cpus), "--access-log", env={"CELLO_INLINE": "auto"})
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
        seen = []
        # Connections spread over the workers; each learns on its own.
        for i in range(2 * cpus):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                seen += threads(client, f"/fast?n={i}", LEARN + 8)
        assert "io" in seen, seen
    finally:
        out = stop(proc)
    logged = [line for line in out.splitlines() if '"GET /fast?n=' in line]
    assert len(logged) == len(seen), (len(logged), len(seen), out[-2000:])
    assert logged[0].split('"')[1] == "GET /fast?n=0 HTTP/1.1", logged[0]


def test_auto_stays_off_with_a_spare_cpu():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs: one worker then leaves one spare")
    proc, port = run_app("--workers", "1", "--no-access-log", env={"CELLO_INLINE": "auto"})
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert set(threads(client, "/fast", LEARN + 8)) == {"loop"}
    finally:
        stop(proc)


def test_a_bad_mode_is_refused_at_start():
    proc, _ = run_app(env={"CELLO_INLINE": "sometimes"})
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert b"CELLO_INLINE must be auto, on or off" in out, out
