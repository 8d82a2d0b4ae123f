"""Issue 12 item 4: permessage-deflate (RFC 7692) with `WebSocketConfig(per_message_deflate=True)`,
against the `websockets` client (which offers it by default) and a bare socket that checks the
frames on the wire (tests/apps/ws_app.py with WS_DEFLATE=1)."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
import struct
import zlib

import pytest

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory  # noqa: E402

pytestmark = pytest.mark.timeout(120)

TAIL = b"\x00\x00\xff\xff"


@pytest.fixture(scope="module")
def server(serve):
    return serve("ws_app", env={"WS_DEFLATE": "1", "WS_MAX_MESSAGE": str(4 * 1024 * 1024)})


def ws_url(server, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def run(coro):
    return asyncio.run(coro)


def handshake(server, path: str, extensions: str | None) -> tuple[socket.socket, dict[str, str]]:
    """A bare-socket upgrade offering `extensions`; returns the socket and the 101's headers."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"connection closed during the handshake: {head!r}"
        head += chunk
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101"), head
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return sock, headers


def send_frame(sock: socket.socket, opcode: int, payload: bytes, rsv1: bool = False, fin: bool = True) -> None:
    mask = os.urandom(4)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(head + mask + masked)


def read_frame(sock: socket.socket) -> tuple[int, bool, bool, bytes]:
    """`(opcode, fin, rsv1, payload)` of the next frame."""

    def exact(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return bytes(buf)

    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exact(8))[0]
    return b0 & 0x0F, bool(b0 & 0x80), bool(b0 & 0x40), exact(n)


def compress(co, data: bytes) -> bytes:
    out = co.compress(data) + co.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def repetitive(n: int) -> str:
    line = "the quick brown fox jumps over the lazy dog; "
    return (line * (n // len(line) + 1))[:n]


def test_the_websockets_client_negotiates_deflate_and_large_messages_round_trip(server):
    async def main():
        async with connect(ws_url(server, "/echo"), max_size=None) as ws:
            ext = ws.response.headers.get("sec-websocket-extensions")
            assert ext is not None and ext.startswith("permessage-deflate"), ext
            assert [type(e).__name__ for e in ws.protocol.extensions] == ["PerMessageDeflate"]
            for size in (0, 5, 70_000, 3_000_000):
                text = repetitive(size)
                await ws.send(text)
                assert await ws.recv() == text
                data = text.encode() + bytes(range(256)) * 10
                await ws.send(data)
                assert await ws.recv() == data
            # Context takeover across many messages keeps both sides in step.
            for i in range(200):
                await ws.send(f"message {i} " * (i % 7))
                assert await ws.recv() == f"message {i} " * (i % 7)

    run(main())


def test_frames_are_compressed_on_the_wire_both_ways_with_context_takeover(server):
    sock, headers = handshake(server, "/echo", "permessage-deflate; client_max_window_bits")
    try:
        assert headers["sec-websocket-extensions"] == "permessage-deflate"
        co = zlib.compressobj(wbits=-15)
        dec = zlib.decompressobj(wbits=-15)
        message = repetitive(200_000).encode()
        sizes = []
        for _ in range(2):
            # A compressed text message from us (RSV1), in two fragments.
            body = compress(co, message)
            send_frame(sock, 0x1, body[:100], rsv1=True, fin=False)
            send_frame(sock, 0x0, body[100:], fin=True)
            opcode, fin, rsv1, payload = read_frame(sock)
            assert (opcode, fin, rsv1) == (0x1, True, True)
            assert dec.decompress(payload + TAIL) == message
            sizes.append(len(payload))
        assert sizes[0] < len(message) // 20, sizes
        # The server's compressor remembers the first message: the second is a back-reference.
        assert sizes[1] < sizes[0], sizes
        # An uncompressed message is still fine on a deflate connection.
        send_frame(sock, 0x2, b"plain bytes")
        opcode, _, rsv1, payload = read_frame(sock)
        assert opcode == 0x2 and rsv1
        assert dec.decompress(payload + TAIL) == b"plain bytes"
    finally:
        sock.close()


def test_no_context_takeover_and_a_small_server_window_are_honoured(server):
    offer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
    sock, headers = handshake(server, "/echo", offer)
    try:
        assert headers["sec-websocket-extensions"] == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        )
        # Random 2 KiB blocks repeated: a 32 KiB window would reach back further than 1 KiB.
        rng = random.Random(7)
        block = bytes(rng.getrandbits(8) for _ in range(2048))
        message = block * 8
        sizes = []
        for _ in range(2):
            co = zlib.compressobj(wbits=-15)  # we reset too (client_no_context_takeover)
            send_frame(sock, 0x2, compress(co, message), rsv1=True)
            opcode, _, rsv1, payload = read_frame(sock)
            assert opcode == 0x2 and rsv1
            # Each message stands alone and needs no more than a 1 KiB window.
            assert zlib.decompressobj(wbits=-10).decompress(payload + TAIL) == message
            sizes.append(len(payload))
        assert sizes[0] == sizes[1]
    finally:
        sock.close()

    async def with_websockets():
        factory = ClientPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True, server_max_window_bits=9
        )
        async with connect(ws_url(server, "/echo"), extensions=[factory], compression=None) as ws:
            assert "server_max_window_bits=9" in ws.response.headers["sec-websocket-extensions"]
            for _ in range(3):
                await ws.send(message)
                assert await ws.recv() == message

    run(with_websockets())


def test_offers_the_server_cannot_honour_are_declined_and_the_next_one_taken(server):
    sock, headers = handshake(server, "/echo", "permessage-deflate; server_max_window_bits=8")
    try:
        assert "sec-websocket-extensions" not in headers
        send_frame(sock, 0x1, b"hello")
        assert read_frame(sock) == (0x1, True, False, b"hello")
    finally:
        sock.close()
    sock, headers = handshake(
        server, "/echo", "permessage-deflate; unknown_param, permessage-deflate; client_no_context_takeover"
    )
    try:
        assert headers["sec-websocket-extensions"] == "permessage-deflate; client_no_context_takeover"
    finally:
        sock.close()


def test_a_client_without_the_extension_gets_plain_frames(server):
    async def main():
        async with connect(ws_url(server, "/echo"), compression=None) as ws:
            assert ws.response.headers.get("sec-websocket-extensions") is None
            text = repetitive(100_000)
            await ws.send(text)
            assert await ws.recv() == text

    run(main())
    sock, headers = handshake(server, "/echo", None)
    try:
        assert "sec-websocket-extensions" not in headers
        send_frame(sock, 0x1, b"hello")
        assert read_frame(sock) == (0x1, True, False, b"hello")
    finally:
        sock.close()


def test_a_message_inflating_past_max_message_size_closes_with_1009(server):
    # 64 MiB of zeros compress to ~64 KiB: the server stops inflating at its 4 MiB limit.
    sock, _ = handshake(server, "/echo", "permessage-deflate")
    try:
        co = zlib.compressobj(wbits=-15)
        body = compress(co, bytes(64 * 1024 * 1024))
        send_frame(sock, 0x2, body, rsv1=True)
        opcode, _, _, payload = read_frame(sock)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
    finally:
        sock.close()
    assert server.alive()


def test_a_corrupt_compressed_message_closes_with_1002(server):
    sock, _ = handshake(server, "/echo", "permessage-deflate")
    try:
        send_frame(sock, 0x1, b"\xff\xff\xff\xff not deflate", rsv1=True)
        opcode, _, _, payload = read_frame(sock)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1002
    finally:
        sock.close()

    async def still_serving():
        async with connect(ws_url(server, "/echo")) as ws:
            await ws.send("after")
            assert await ws.recv() == "after"

    run(still_serving())


def test_a_server_without_deflate_ignores_the_offer(serve):
    srv = serve("ws_app")

    async def main():
        async with connect(ws_url(srv, "/echo"), compression="deflate") as ws:
            assert ws.response.headers.get("sec-websocket-extensions") is None
            await ws.send("plain")
            assert await ws.recv() == "plain"

    run(main())


def test_per_message_deflate_is_accepted_by_the_config():
    import json

    import cello
    from cello import WebSocketConfig

    app = cello.App()
    app.set_websocket(WebSocketConfig(per_message_deflate=True))
    cello._cello.validate_config(json.dumps({"websocket": {"perMessageDeflate": True}}))
