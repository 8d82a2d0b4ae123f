"""Issue 12 item 7: streaming responses honour back-pressure: a client that does not read makes
the producer wait; the server does not buffer the body (HTTP/1.1 and HTTP/2 cleartext)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

pytestmark = pytest.mark.timeout(90)

CHUNK = 65536


@pytest.fixture(scope="module")
def server(serve):
    return serve("stream_app")


def produced(server, kind: str) -> int:
    return httpx.get(server.url("/produced"), timeout=5).json()[kind]


def wait_until_stalled(server, kind: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    last, since = produced(server, kind), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = produced(server, kind)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 1.5 and now > 0:
            return now
    pytest.fail(f"the {kind} producer never stalled for a client that does not read ({last} chunks)")


@pytest.mark.parametrize(("path", "kind"), [("/endless", "async"), ("/endless-sync", "sync")])
def test_http1_slow_client_stalls_the_producer_and_rss_stays_flat(server, path, kind):
    before_rss = server.rss()
    start = produced(server, kind)
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        stalled = wait_until_stalled(server, kind) - start
        # Channel (16 chunks) + socket buffers: a few MiB, never the endless body.
        assert stalled * CHUNK < 32 * 1024 * 1024, f"{stalled} chunks produced for a client that read nothing"
        assert server.rss() - before_rss < 48 * 1024 * 1024
        # Reading resumes the producer.
        got = 0
        while got < 4 * 1024 * 1024:
            got += len(sock.recv(1 << 20))
        deadline = time.monotonic() + 10
        while produced(server, kind) - start <= stalled and time.monotonic() < deadline:
            got += len(sock.recv(1 << 20))
        assert produced(server, kind) - start > stalled
    finally:
        sock.close()


def test_http2_slow_client_stalls_the_producer(server):
    h2 = pytest.importorskip("h2")
    assert h2
    before_rss = server.rss()
    start = produced(server, "async")
    with (
        httpx.Client(http1=False, http2=True, timeout=10) as client,
        client.stream("GET", server.url("/endless")) as r,
    ):
        assert r.http_version == "HTTP/2"
        next(r.iter_raw())  # one chunk, then stop reading: the stream window fills
        stalled = wait_until_stalled(server, "async") - start
        assert stalled * CHUNK < 32 * 1024 * 1024
        assert server.rss() - before_rss < 48 * 1024 * 1024
