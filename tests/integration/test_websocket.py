"""Issue 12 item 4 (and issue 13: Depends in WebSocket handlers): WebSocket over a real
upgrade, exercised with the `websockets` client (tests/apps/ws_app.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import time

import httpx
import pytest

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(serve):
    return serve("ws_app")


def ws_url(server, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def run(coro):
    return asyncio.run(coro)


def events(server) -> list[str]:
    r = httpx.get(server.url("/events"), timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for_event(server, predicate, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = events(server)
        if any(predicate(e) for e in seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"event not seen within {timeout} s; events: {seen[-20:]}")


def raw_handshake(server, path: str) -> socket.socket:
    """Open a WebSocket with a bare socket (a client that then does whatever the test wants)."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"connection closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exact(8))[0]
    return b0 & 0x0F, exact(n)


# ---- the async style -----------------------------------------------------------------------


def test_echo_text_and_binary_with_async_iteration(server):
    async def main():
        async with connect(ws_url(server, "/echo")) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            big = "é" * 20000
            await ws.send(big)
            assert await ws.recv() == big

    run(main())


def test_receive_json_and_send_json(server):
    async def main():
        async with connect(ws_url(server, "/json")) as ws:
            await ws.send(json.dumps({"a": [1, 2]}))
            assert json.loads(await ws.recv()) == {"got": {"a": [1, 2]}}

    run(main())


def test_path_params_are_typed_and_query_params_apply(server):
    async def main():
        async with connect(ws_url(server, "/rooms/42?name=bob")) as ws:
            assert json.loads(await ws.recv()) == {"room": 42, "name": "bob", "type": "int"}
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 4000 and info.value.rcvd.reason == "bye"

    run(main())


def test_a_failed_path_constraint_is_404(server):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(server, "/rooms/abc")):
                pass
        assert info.value.response.status_code == 404

    run(main())


def test_depends_in_a_websocket_handler(server):
    async def main():
        async with connect(ws_url(server, "/dep")) as ws:
            assert await ws.recv() == "ada"

    run(main())


def test_guards_apply_to_the_upgrade(server):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(server, "/guarded")):
                pass
        assert info.value.response.status_code == 401
        assert info.value.response.headers["content-type"] == "application/problem+json"
        async with connect(ws_url(server, "/guarded"), additional_headers={"X-User": "grace"}) as ws:
            assert await ws.recv() == "welcome grace"

    run(main())


def test_subprotocol_negotiation(server):
    async def main():
        async with connect(ws_url(server, "/proto"), subprotocols=["v1.chat", "v2.chat"]) as ws:
            assert ws.subprotocol == "v2.chat"
            assert await ws.recv() == "v2.chat"
        async with connect(ws_url(server, "/proto")) as ws:
            assert ws.subprotocol is None
            assert await ws.recv() == "None"

    run(main())


def test_a_handler_that_does_not_accept_refuses_with_403(server):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(server, "/refuse")):
                pass
        assert info.value.response.status_code == 403

    run(main())


def test_a_failing_handler_closes_with_1011_and_the_server_keeps_serving(server):
    async def main():
        async with connect(ws_url(server, "/boom")) as ws:
            await ws.send("go")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1011
        async with connect(ws_url(server, "/echo")) as ws:
            await ws.send("still here")
            assert await ws.recv() == "still here"

    run(main())


def test_a_plain_get_is_426_problem_json(server):
    r = httpx.get(server.url("/echo"), timeout=5)
    assert r.status_code == 426
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["upgrade"] == "websocket"
    assert r.json()["status"] == 426


def test_a_bad_handshake_is_400(server):
    r = httpx.get(
        server.url("/echo"),
        headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"},
        timeout=5,
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"


def test_the_client_offering_permessage_deflate_gets_an_uncompressed_connection(server):
    async def main():
        async with connect(ws_url(server, "/echo"), compression="deflate") as ws:
            assert ws.response.headers.get("sec-websocket-extensions") is None
            await ws.send("plain")
            assert await ws.recv() == "plain"

    run(main())


def test_http_requests_are_still_served_after_websocket_connections(server):
    # Every WebSocket upgrade is a job for the Python thread: it must count against the job
    # queue like a request does, or the queue's count drifts and plain requests get 503.
    async def main():
        for _ in range(3):
            async with connect(ws_url(server, "/echo")) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"

    run(main())
    for _ in range(5):
        r = httpx.get(server.url("/events"), timeout=5)
        assert r.status_code == 200, r.text
        assert isinstance(r.json(), list)


# ---- the sync style ------------------------------------------------------------------------


def test_sync_handler_runs_off_the_loop_and_recv_is_none_when_closed(server):
    async def main():
        async with connect(ws_url(server, "/sync")) as ws:
            await ws.send("a")
            assert await ws.recv() == "sync:a"
            await ws.send(b"b")
            assert await ws.recv() == "sync:b'b'"

    run(main())
    seen = wait_for_event(server, lambda e: e == "sync-closed")
    assert "sync-thread-is-main:False" in seen


# ---- limits, liveness, back-pressure -----------------------------------------------------------


def test_a_message_over_max_message_size_closes_with_1009(server):
    async def main():
        async with connect(ws_url(server, "/echo"), max_size=None) as ws:
            await ws.send("x" * 70000)  # the app allows 65536
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009

    run(main())


def test_the_handler_is_cancelled_when_the_peer_vanishes(server):
    sock = raw_handshake(server, "/sleeper")
    opcode, payload = read_frame(sock)
    assert (opcode, payload) == (1, b"ready")
    # Vanish: RST instead of a close frame.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    wait_for_event(server, lambda e: e == "sleeper-cancelled")


def test_a_client_that_does_not_read_does_not_grow_server_memory(server):
    sock = raw_handshake(server, "/flood")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        before = server.rss()
        wait_for_event(server, lambda e: e.startswith("flood:"))

        def sent() -> int:
            counts = [int(e.split(":")[1]) for e in events(server) if e.startswith("flood:")]
            return max(counts, default=0)

        # The sender stalls: its count stops moving while we do not read.
        deadline = time.monotonic() + 20
        last, stable_since = sent(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = sent()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since > 1.5:
                break
        else:
            pytest.fail(f"the handler kept sending to a client that does not read ({last} x 64 KiB)")
        assert last * 65536 < 48 * 1024 * 1024, f"{last} messages of 64 KiB went out to a client that reads nothing"
        assert server.rss() - before < 64 * 1024 * 1024
    finally:
        sock.close()
    wait_for_event(server, lambda e: e.startswith("flood-ended:"))


def test_a_handler_that_reads_slowly_pushes_back_on_the_client(server):
    async def main():
        before = server.rss()
        async with connect(ws_url(server, "/slow-reader"), max_size=None, write_limit=65536) as ws:
            chunk = b"y" * 65536
            sent = 0

            async def pump():
                nonlocal sent
                for _ in range(2000):  # 125 MiB if nothing pushed back
                    await ws.send(chunk)
                    sent += 1

            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pump(), timeout=4)
            assert sent * 65536 < 64 * 1024 * 1024, f"{sent} messages were taken in by a handler reading 1/s"
            assert server.rss() - before < 64 * 1024 * 1024

    run(main())


def test_a_thousand_concurrent_connections_on_one_worker(server):
    n = 1000

    async def one(i: int, opened: asyncio.Event, counter: list[int]) -> str:
        async with connect(ws_url(server, "/echo"), open_timeout=60, ping_interval=None, compression=None) as ws:
            counter[0] += 1
            if counter[0] == n:
                opened.set()
            await asyncio.wait_for(opened.wait(), 90)  # all n are open at the same time
            await ws.send(f"m{i}")
            return await ws.recv()

    async def main():
        opened, counter = asyncio.Event(), [0]
        sem = asyncio.Semaphore(200)  # pace the handshakes, not the open connections

        async def paced(i):
            async with sem:
                pass
            return await one(i, opened, counter)

        results = await asyncio.gather(*(paced(i) for i in range(n)))
        assert results == [f"m{i}" for i in range(n)]

    run(main())
    assert server.alive()


# ---- configuration, keep-alive, connection accounting, drain --------------------------------


def test_server_pings_keep_a_quiet_connection_alive_and_idle_peers_are_closed_1001(serve):
    srv = serve("ws_app", env={"WS_PING": "0.3", "WS_IDLE": "1.2"})

    async def quiet_but_alive():
        # The client answers the server's pings (websockets does), so it is never idle.
        async with connect(ws_url(srv, "/echo"), ping_interval=None) as ws:
            await asyncio.sleep(3)
            await ws.send("after a quiet while")
            assert await ws.recv() == "after a quiet while"

    run(quiet_but_alive())

    # A peer that never answers anything: pings arrive, then a close with 1001.
    sock = raw_handshake(srv, "/echo")
    sock.settimeout(10)
    started = time.monotonic()
    saw_ping = False
    while True:
        opcode, payload = read_frame(sock)
        if opcode == 9:
            saw_ping = True
            continue
        assert opcode == 8, opcode
        assert struct.unpack("!H", payload[:2])[0] == 1001
        break
    assert saw_ping
    assert 0.8 < time.monotonic() - started < 6
    sock.close()


def test_websocket_connections_count_against_max_connections(serve):
    srv = serve("ws_app", env={"WS_MAX_CONNECTIONS": "3"})

    async def main():
        held = [await connect(ws_url(srv, "/echo"), ping_interval=None) for _ in range(3)]
        try:
            with pytest.raises((InvalidStatus, OSError, ConnectionClosed, asyncio.TimeoutError)) as info:
                async with connect(ws_url(srv, "/echo"), open_timeout=3):
                    pass
            if isinstance(info.value, InvalidStatus):
                assert info.value.response.status_code == 503
            for ws in held:
                await ws.send("alive")
                assert await ws.recv() == "alive"
        finally:
            await held[0].close()
        # A slot is free again once a WebSocket closes.
        deadline = time.monotonic() + 10
        while True:
            try:
                async with connect(ws_url(srv, "/echo"), open_timeout=3) as ws:
                    await ws.send("in")
                    assert await ws.recv() == "in"
                break
            except (InvalidStatus, OSError, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        for ws in held[1:]:
            await ws.close()

    run(main())


def test_drain_closes_websockets_with_1001(serve):
    srv = serve("ws_app", fresh=True)

    async def main():
        async with connect(ws_url(srv, "/echo"), ping_interval=None) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            os.kill(srv.pid, signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 15)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001

    run(main())
    deadline = time.monotonic() + 15
    while srv.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not srv.alive(), "the server did not exit after its WebSockets were closed"
