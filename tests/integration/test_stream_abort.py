"""Issue 9 item 1: a streamed response whose generator fails midway never looks complete.

Every case opens its connection and sends its request, then the client pauses (until the
server has logged the failures, at most a few seconds) so the generator fails while the
response channel is full, then reads. HTTP/1.1 must end without the terminating chunk (the
connection is closed); HTTP/2 must end with RST_STREAM INTERNAL_ERROR, never END_STREAM."""

from __future__ import annotations

import socket
import time

import pytest

CHUNK = 65536
FAILED_LINE = "streaming response failed"
PAUSE = 3.0


@pytest.fixture(scope="module")
def server(serve):
    return serve("stream_abort_app")


def failures_logged(server) -> int:
    return server.log().count(FAILED_LINE)


def pause_until_logged(server, expected: int, timeout: float = PAUSE) -> None:
    """The client's deliberate pause: until `expected` failures are logged or `timeout`."""
    deadline = time.monotonic() + timeout
    while failures_logged(server) < expected and time.monotonic() < deadline:
        time.sleep(0.05)


def h1_open(server, path: str) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    # A small receive buffer, so the server's writes back up sooner.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return sock


def h1_read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything until the server closes (a hung connection fails the test)."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while True:
            got = sock.recv(1 << 20)
            if not got:
                break
            data += got
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return bytes(data)


def assert_truncated_h1(raw: bytes, n: int, label: object = None) -> None:
    head, _, body = raw.partition(b"\r\n\r\n")
    if not raw:
        return  # closed before even the head went out: no response, so nothing looks complete
    assert head.startswith(b"HTTP/1.1 200"), (label, head[:200])
    assert b"transfer-encoding: chunked" in head.lower(), head
    assert not body.endswith(b"0\r\n\r\n"), f"a failed stream of {n} chunks ended cleanly"
    # What did arrive is whole chunks of our data, never more than was produced.
    assert body.count(b"x") <= n * CHUNK


CASES_H1 = [("sync", n) for n in (1, 20, 40, 64, 80)] + [("async", n) for n in (1, 17, 40, 77)]


def test_failed_stream_never_ends_cleanly_h1(server):
    before = failures_logged(server)
    socks = [(kind, n, h1_open(server, f"/{kind}/{n}")) for kind, n in CASES_H1]
    pause_until_logged(server, before + len(socks))
    for kind, n, sock in socks:
        assert_truncated_h1(h1_read_all(sock), n, (kind, n))
    # Logged once per failed stream.
    deadline = time.monotonic() + 5
    while failures_logged(server) < before + len(socks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert failures_logged(server) == before + len(socks)


def test_complete_stream_still_ends_cleanly_h1(server):
    sock = h1_open(server, "/ok/40")
    time.sleep(0.5)  # the same slow reader, on a stream that succeeds
    raw = h1_read_all_until_end(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body.endswith(b"0\r\n\r\n")
    assert body.count(b"x") == 40 * CHUNK


def h1_read_all_until_end(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = bytearray()
    while not data.endswith(b"\r\n0\r\n\r\n"):
        got = sock.recv(1 << 20)
        if not got:
            break
        data += got
    sock.close()
    return bytes(data)


def test_generator_own_connection_reset_is_a_failure(server):
    sock = h1_open(server, "/own-reset")
    raw = h1_read_all(sock)
    assert_truncated_h1(raw, 1)


# ---- HTTP/2 -----------------------------------------------------------------------------------


def h2_open(server, path: str):
    import h2.config
    import h2.connection
    import h2.settings

    sock = socket.create_connection((server.host, server.port), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
    )
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "127.0.0.1")],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    return sock, conn, sid


def h2_finish(sock, conn, sid, timeout: float = 10.0):
    """Open the windows, read to the end of the stream: ('reset', code) or ('ended', None)."""
    import h2.events
    import h2.settings

    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    conn.increment_flow_control_window(2**30)
    sock.sendall(conn.data_to_send())
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            data = sock.recv(1 << 20)
            if not data:
                return ("closed", None)
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    return ("reset", ev.error_code)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    return ("ended", None)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        return ("timeout", None)
    finally:
        sock.close()


CASES_H2 = [("sync", n) for n in (1, 8, 16, 17, 40)] + [("async", n) for n in (1, 16, 17)]


def test_failed_stream_is_reset_h2(server):
    import h2.errors

    before = failures_logged(server)
    opened = [(kind, n, *h2_open(server, f"/{kind}/{n}")) for kind, n in CASES_H2]
    # With a zero window nothing is sent: streams of up to 16 chunks fail while queued.
    pause_until_logged(server, before + sum(1 for _, n, *_ in opened if n <= 16))
    for kind, n, sock, conn, sid in opened:
        outcome = h2_finish(sock, conn, sid)
        assert outcome == ("reset", h2.errors.ErrorCodes.INTERNAL_ERROR), (kind, n, outcome)


def test_complete_stream_ends_cleanly_h2(server):
    sock, conn, sid = h2_open(server, "/ok/17")
    time.sleep(0.3)
    assert h2_finish(sock, conn, sid) == ("ended", None)
