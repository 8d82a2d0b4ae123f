"""Issue 3 items 1-2: the execution model of one worker, over real sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)


async def _raw_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def _concurrent(port: int, path: str, n: int) -> tuple[float, list[bytes]]:
    async def run():
        t0 = time.monotonic()
        out = await asyncio.gather(*[_raw_get(port, path) for _ in range(n)])
        return time.monotonic() - t0, out

    return asyncio.run(run())


@pytest.fixture(scope="module")
def server(serve):
    return serve("runtime_app", "--env", "production")


def test_200_concurrent_async_sleeps_on_one_worker(server):
    elapsed, responses = _concurrent(server.port, "/sleep?s=1", 200)
    assert all(r.startswith(b"HTTP/1.1 200") for r in responses)
    assert elapsed < 1.5, f"200 concurrent 1 s sleeps took {elapsed:.2f} s on one worker"


def test_handlers_run_inside_a_task_on_uvloop(server):
    body = httpx.get(server.url("/eager")).json()
    assert body["task"] is True
    # uvloop is installed in the dev environment, so it is the loop in use.
    assert body["loop"].startswith("uvloop")
    assert httpx.get(server.url("/suspends")).json() == {"task": True}


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks need Python 3.12 (3.10/3.11 take one loop turn)")
def test_coroutine_that_never_suspends_completes_without_a_loop_round_trip(server):
    before = httpx.get(server.url("/stats")).json()
    for _ in range(10):
        assert httpx.get(server.url("/eager")).status_code == 200
    mid = httpx.get(server.url("/stats")).json()
    assert mid["eager"] - before["eager"] == 10
    assert mid["tasks"] == before["tasks"]
    assert httpx.get(server.url("/suspends")).status_code == 200
    after = httpx.get(server.url("/stats")).json()
    assert after["tasks"] == mid["tasks"] + 1


def test_exception_after_await_is_a_problem_500(server):
    r = httpx.get(server.url("/raise-after-await"))
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "traceback" not in r.text  # production
    assert httpx.get(server.url("/eager")).status_code == 200


def test_asyncio_client_library_inside_a_handler(server, serve):
    other = serve("runtime_app", "--env", "production", fresh=True)
    r = httpx.get(server.url("/proxy"), params={"url": other.url("/eager")})
    assert r.status_code == 200
    assert r.json()["status"] == 200
    assert r.json()["body"]["task"] is True


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        return True
    except OSError:
        return False


def test_redis_asyncio_inside_a_handler(server):
    if not _redis_up():
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is not running on 127.0.0.1:6379 (CI must start it)")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    elapsed, responses = _concurrent(server.port, "/redis?k=a&v=hello", 20)
    assert all(r.startswith(b"HTTP/1.1 200") and r.endswith(b'{"value":"hello"}') for r in responses), responses[0]


def test_client_disconnect_cancels_the_handler_task(server, tmp_path):
    marker = tmp_path / "cancelled"
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"GET /cancellable?marker={marker} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 3
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists() and marker.read_text() == "cancelled"


def test_blocking_handlers_run_in_the_pool_concurrently(server):
    elapsed, responses = _concurrent(server.port, "/block", 8)
    assert all(r.startswith(b"HTTP/1.1 200") for r in responses)
    assert all(b"cello-pool" in r for r in responses)
    assert elapsed < 1.8, f"8 concurrent blocking 1 s handlers took {elapsed:.2f} s"
    # The loop stayed free meanwhile: an async route answers at once.
    assert httpx.get(server.url("/eager")).status_code == 200


def test_sync_handlers_run_inline_by_default(server):
    assert httpx.get(server.url("/sync")).json()["thread"] == "MainThread"


def test_slow_sync_handler_moves_to_the_pool_adaptively(serve):
    server = serve("runtime_app", "--env", "production", fresh=True)
    names = [httpx.get(server.url("/sync?s=0.08"), timeout=10).json()["thread"] for _ in range(5)]
    assert names[0] == "MainThread"
    assert names[-1].startswith("cello-pool"), names
    assert "thread pool" in server.log()


def test_threadpool_config_can_send_every_sync_handler_to_the_pool(serve):
    server = serve("runtime_app", "--env", "production", env={"POOL_ALL": "1"}, fresh=True)
    assert httpx.get(server.url("/sync")).json()["thread"].startswith("cello-pool")
    elapsed, responses = _concurrent(server.port, "/sync?s=1", 8)
    assert all(r.startswith(b"HTTP/1.1 200") for r in responses)
    assert elapsed < 1.8
