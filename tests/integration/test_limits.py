"""Issue 2, item 2: limits and timeouts from LimitsConfig/TimeoutConfig.

limits_app: max_body_size = 10 MiB, max_header_size = 8192 (default), read_header = 1 s, idle = 2 s,
read_body = 2 s, handler = 2 s.
"""

import json
import select
import socket
import time

import httpx
import pytest
from rawhttp import ConnectionClosed, assert_problem, send_raw

pytestmark = pytest.mark.timeout(30)

MIB = 1024 * 1024
LIMIT = 10 * MIB


@pytest.fixture(scope="module")
def server(serve):
    return serve("limits_app")


def push_body_until_answered(server, conn, chunks, rss_every=MIB):
    """Send `chunks` without blocking, stopping as soon as the server answers or stops accepting.

    Returns (bytes_sent, peak_rss_of_server). Whatever the server already sent is left in conn.buf."""
    sock = conn.sock
    sock.setblocking(False)
    sent = 0
    peak = server.rss()
    next_sample = rss_every
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                readable, writable, _ = select.select([sock], [sock], [], 5)
                if readable:
                    return sent, peak
                if not writable:
                    raise AssertionError(f"server neither read the body nor answered for 5 s (sent {sent} bytes)")
                try:
                    n = sock.send(view)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    return sent, peak
                sent += n
                view = view[n:]
                if sent >= next_sample:
                    peak = max(peak, server.rss())
                    next_sample += rss_every
        return sent, peak
    finally:
        try:
            if select.select([sock], [], [], 5)[0]:
                data = sock.recv(1 << 20)
                conn.buf += data
        except OSError:
            pass
        sock.setblocking(True)
        sock.settimeout(5)
        peak = max(peak, server.rss())


def read_answer(conn):
    try:
        return conn.read_response()
    except (ConnectionClosed, ConnectionResetError) as exc:
        raise AssertionError(f"connection closed/reset without a complete response: {exc}") from exc


def test_ping(server):
    assert httpx.get(server.url("/ping")).json() == {"pong": True}


# --- 431 -------------------------------------------------------------------------------------


def test_oversized_header_value_is_431(server):
    resp = send_raw(server, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16_000 + b"\r\n\r\n")
    assert resp is not None, "connection closed without a 431"
    assert resp.status == 431


def test_oversized_headers_total_is_431(server):
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(120))  # ~13 KB in total
    resp = send_raw(server, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert resp is not None, "connection closed without a 431"
    assert resp.status == 431


def test_431_is_problem_json(server):
    resp = send_raw(server, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16_000 + b"\r\n\r\n")
    assert resp is not None, "connection closed without a 431"
    assert_problem(resp, 431)


def test_headers_under_limit_are_fine(server):
    resp = send_raw(server, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 6_000 + b"\r\n\r\n")
    assert resp is not None and resp.status == 200


# --- 413 -------------------------------------------------------------------------------------


def test_body_within_limit_is_accepted(server):
    resp = httpx.post(server.url("/upload"), content=b"z" * MIB, timeout=10)
    assert resp.status_code == 200
    assert resp.json() == {"size": MIB}


def test_body_exactly_at_limit_is_accepted(server):
    resp = httpx.post(server.url("/upload"), content=b"z" * LIMIT, timeout=20)
    assert resp.status_code == 200
    assert resp.json() == {"size": LIMIT}


def test_body_one_byte_over_limit_is_413_problem(server):
    with server.connect() as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1))
        chunks = [b"z" * (64 * 1024)] * (LIMIT // (64 * 1024)) + [b"z"]
        push_body_until_answered(server, conn, chunks)
        resp = read_answer(conn)
    assert_problem(resp, 413)


def test_50mb_upload_with_content_length_refused_promptly_without_buffering(server):
    total = 50 * MIB
    chunk = b"u" * (64 * 1024)
    baseline = server.rss()
    start = time.monotonic()
    with server.connect() as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n")
        conn.send(b"Content-Length: %d\r\n\r\n" % total)
        sent, peak = push_body_until_answered(server, conn, (chunk for _ in range(total // len(chunk))))
        resp = read_answer(conn)
    elapsed = time.monotonic() - start
    assert_problem(resp, 413)
    assert sent < total, "the 413 arrived only after the whole 50 MB body was sent"
    assert elapsed < 5, f"413 took {elapsed:.1f} s"
    grown = (peak - baseline) / MIB
    assert grown < 20, f"server RSS grew by {grown:.0f} MiB while refusing a 50 MB body"
    assert httpx.get(server.url("/ping")).status_code == 200


def test_chunked_upload_over_limit_is_413_while_reading(server):
    total = 20 * MIB
    piece = 64 * 1024
    chunk = b"%x\r\n" % piece + b"c" * piece + b"\r\n"
    baseline = server.rss()
    with server.connect() as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent, peak = push_body_until_answered(server, conn, (chunk for _ in range(total // piece)))
        resp = read_answer(conn)
    assert_problem(resp, 413)
    assert sent < total, "the 413 for a chunked body arrived only after the whole body was sent"
    grown = (peak - baseline) / MIB
    assert grown < 40, f"server RSS grew by {grown:.0f} MiB while refusing a 20 MB chunked body"
    assert httpx.get(server.url("/ping")).status_code == 200


def test_chunked_upload_within_limit_is_accepted(server):
    def gen():
        for _ in range(16):
            yield b"k" * 4096

    resp = httpx.post(server.url("/upload"), content=gen(), timeout=10)
    assert resp.status_code == 200
    assert resp.json() == {"size": 16 * 4096}


# --- read_header timeout ---------------------------------------------------------------------


def test_client_that_never_finishes_headers_is_cut_off_while_others_are_served(server):
    with server.connect() as slow:
        slow.send(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        start = time.monotonic()
        served = 0
        with httpx.Client(timeout=2) as client:
            while time.monotonic() - start < 0.7:
                assert client.get(server.url("/ping")).json() == {"pong": True}
                served += 1
                time.sleep(0.05)
        took = slow.wait_closed(timeout=6)
        total = time.monotonic() - start
    assert served >= 3, "other clients were not served while a slow client held a connection"
    assert took is not None, "a client that never finished its headers was not disconnected within 6 s"
    assert 0.7 <= total <= 3.5, f"read_header=1 but the slow client was cut off after {total:.1f} s"


def test_trickling_headers_are_cut_off_after_read_header(server):
    """read_header bounds the whole head, not the gap between bytes (slowloris)."""
    with server.connect() as slow:
        slow.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        closed_at = None
        while time.monotonic() - start < 8:
            try:
                slow.send(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic() - start
                break
            if select.select([slow.sock], [], [], 0.2)[0]:
                try:
                    data = slow.sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data or data.startswith(b"HTTP/1.1 4"):
                    closed_at = time.monotonic() - start
                    break
    assert closed_at is not None, "a client trickling header bytes was never cut off"
    assert closed_at <= 3.5, f"read_header=1 but a trickling client lasted {closed_at:.1f} s"


def test_silent_connection_is_closed(server):
    with server.connect() as conn:
        took = conn.wait_closed(timeout=6)
    assert took is not None, "a connection that never sent a byte stayed open for 6 s"
    assert took <= 4.5


# --- idle keep-alive timeout -----------------------------------------------------------------


def test_idle_keep_alive_connection_is_closed_after_idle_timeout(server):
    with server.connect() as conn:
        assert conn.request("GET", "/ping").status == 200
        took = conn.wait_closed(timeout=8)
    assert took is not None, "idle keep-alive connection (idle=2) still open after 8 s"
    assert 1.5 <= took <= 4.5, f"idle=2 but the idle connection was closed after {took:.1f} s"


def test_connection_in_use_is_not_closed_by_idle_timeout(server):
    with server.connect() as conn:
        for _ in range(6):  # 3 s of activity, longer than idle=2
            assert conn.request("GET", "/ping").status == 200
            time.sleep(0.5)


# --- read_body and handler timeouts (TimeoutConfig fields do what their names say) ---------------


def test_body_that_never_arrives_is_cut_off_after_read_body(server):
    with server.connect() as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        start = time.monotonic()
        conn.settimeout(6)
        try:
            resp = conn.read_response()
        except (ConnectionClosed, ConnectionResetError):
            resp = None
        except TimeoutError:
            pytest.fail("read_body=2 but a stalled body was not cut off within 6 s")
        took = time.monotonic() - start
    assert took <= 4, f"read_body=2 but the stalled body was cut off after {took:.1f} s"
    if resp is not None:
        assert_problem(resp, 408)


def test_handler_over_handler_timeout_is_504(server):
    start = time.monotonic()
    resp = httpx.get(server.url("/slow-async"), timeout=10)
    took = time.monotonic() - start
    assert_problem(resp, 504)
    assert took < 4, f"handler=2 but the 504 came after {took:.1f} s"
    assert httpx.get(server.url("/ping"), timeout=5).status_code == 200


# --- Expect: 100-continue and HTTP/2 -----------------------------------------------------------


def test_expect_100_continue_within_limit(server):
    with server.connect(timeout=3) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
        try:
            interim = conn.read_head()
        except TimeoutError:
            pytest.fail("no 100 Continue for Expect: 100-continue")
        assert interim.status == 100
        conn.send(b"a" * 1000)
        resp = conn.read_response("POST")
    assert resp.status == 200
    assert resp.json() == {"size": 1000}


def test_expect_100_continue_over_limit_is_413_without_reading_the_body(server):
    with server.connect(timeout=3) as conn:
        conn.send(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (50 * MIB)
        )
        try:
            resp = conn.read_response("POST")  # skips an (unnecessary) 100 Continue
        except TimeoutError:
            pytest.fail("no final answer to an over-limit Expect: 100-continue request (body never sent)")
    assert_problem(resp, 413)


def h2_post_until_answered(server, path: str, total: int, chunk: int = 16384):
    """POST `total` bytes over h2c prior knowledge with the h2 library, reading while sending, so a
    response that comes before the body is complete is seen (httpx cannot). Returns
    (status, headers, body, bytes_sent, reset_code)."""
    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection((server.host, server.port), timeout=5)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    request_headers = [
        (":method", "POST"),
        (":path", path),
        (":scheme", "http"),
        (":authority", f"{server.host}:{server.port}"),
        ("content-length", str(total)),
    ]
    conn.send_headers(sid, request_headers)
    sock.sendall(conn.data_to_send())
    status, headers, body, sent, reset, done = None, {}, b"", 0, None, False
    deadline = time.monotonic() + 10
    try:
        while not done and time.monotonic() < deadline:
            can_send = sent < total and status is None and reset is None
            window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size) if can_send else 0
            if window > 0:
                n = min(window, chunk, total - sent)
                conn.send_data(sid, b"h" * n, end_stream=sent + n == total)
                sent += n
                sock.sendall(conn.data_to_send())
            if select.select([sock], [], [], 0 if window > 0 else 0.5)[0]:
                data = sock.recv(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                        headers = {k.decode(): v.decode() for k, v in event.headers}
                        status = int(headers[":status"])
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                        body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, sid)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                        done = True
                    elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                        reset = event.error_code
                        done = status is not None
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
    finally:
        sock.close()
    return status, headers, body, sent, reset


def test_http2_body_over_limit_is_413(server):
    total = 50 * MIB
    status, headers, body, sent, reset = h2_post_until_answered(server, "/upload", total)
    assert status == 413, f"HTTP/2 over-limit upload: status {status}, stream reset {reset!r}, sent {sent}"
    assert headers.get("content-type", "").startswith("application/problem+json")
    assert json.loads(body)["status"] == 413
    assert sent < total, "the 413 came only after the whole body was sent"
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        assert client.get(server.url("/ping")).status_code == 200


def test_http2_body_within_limit_is_accepted(server):
    status, _, body, sent, reset = h2_post_until_answered(server, "/upload", MIB)
    assert status == 200, f"status {status}, reset {reset!r}, sent {sent}"
    assert json.loads(body) == {"size": MIB}
