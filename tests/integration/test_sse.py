"""Issue 12 item 5: Server-Sent Events over a real socket (tests/apps/sse_app.py)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(serve):
    return serve("sse_app")


def wait_for_event(server, name: str, timeout: float = 5.0) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if name in httpx.get(server.url("/events"), timeout=5).json():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{name} not seen within {timeout} s")


def test_async_generator_events_are_framed_and_not_buffered_or_compressed(server):
    r = httpx.get(server.url("/count?n=3"), headers={"Accept-Encoding": "gzip, br"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"].startswith("no-cache")
    assert "content-encoding" not in r.headers
    assert "content-length" not in r.headers
    assert r.text == "".join(f'event: tick\nid: {i}\ndata: {{"i":{i}}}\n\n' for i in range(3))


def test_sync_iterables_work(server):
    r = httpx.get(server.url("/sync"), timeout=10)
    assert r.text == "data: a\n\nid: 2\ndata: b\n\ndata: c\ndata: d\n\n"


def test_last_event_id_reaches_the_handler(server):
    r = httpx.get(server.url("/resume"), headers={"Last-Event-ID": "5"}, timeout=10)
    assert r.text == "id: 6\ndata: 6\n\nid: 7\ndata: 7\n\nid: 8\ndata: 8\n\n"
    r = httpx.get(server.url("/resume"), timeout=10)
    assert r.text.startswith("id: 0\n")


def test_heartbeat_comments_while_the_source_is_quiet(server):
    with httpx.stream("GET", server.url("/quiet?hb=0.2"), timeout=10) as r:
        it = r.iter_text()
        first = next(it)
        assert first == ": keep-alive\n\n"
        rest = "".join(it)
    assert rest.count(": keep-alive\n\n") >= 2
    assert rest.endswith("data: late\n\n")


def test_events_arrive_as_they_are_produced(server):
    with httpx.stream("GET", server.url("/forever?tag=live"), timeout=10) as r:
        assert next(r.iter_text()) == "data: first\n\n"  # without waiting for the end


def test_the_generator_is_cancelled_promptly_when_the_client_leaves(server):
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(b"GET /forever?tag=leave HTTP/1.1\r\nHost: t\r\n\r\n")
    buf = b""
    while b"data: first" not in buf:
        chunk = sock.recv(4096)
        assert chunk
        buf += chunk
    sock.close()
    took = wait_for_event(server, "closed:leave", timeout=5)
    assert took < 3, f"the generator ran on {took:.1f} s after the client left"
