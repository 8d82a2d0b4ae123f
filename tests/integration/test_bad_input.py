"""Issue 2, item 10: bad input never crashes or hangs a worker. Each hostile request gets an
error answer (or a closed connection) within a few seconds, and the server then still answers a
normal request.

robust_app allows 256 KiB of headers so that huge query strings and header counts get past the
HTTP parser into routing and the handler."""

import socket
import time

import httpx
import pytest
from rawhttp import Conn, ConnectionClosed, assert_problem, send_raw

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def server(serve):
    return serve("robust_app", fresh=True)


@pytest.fixture(autouse=True)
def still_serving(request):
    """After every test in this module, the server must be alive and answering."""
    yield
    if "server" not in request.fixturenames:
        return
    server = request.getfixturevalue("server")
    assert server.alive(), f"server died (exit {server.proc.returncode})"
    resp = httpx.get(server.url("/ping"), timeout=5)
    assert resp.status_code == 200 and resp.json() == {"pong": True}, "server no longer answers normally"


def answer(server, data: bytes, timeout: float = 5.0):
    try:
        return send_raw(server, data, timeout=timeout)
    except TimeoutError:
        pytest.fail(f"server neither answered nor closed within {timeout} s for {data[:80]!r}")


MALFORMED_REQUEST_LINES = [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /ping\r\n\r\n",
    b"GET /ping HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"GET /ping HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /ping FTP/1.1\r\nHost: x\r\n\r\n",
    b" / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"G@T /ping HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello on the plain port
    b"GET /ping HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
    b"GET /ping HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n",
    b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    b"GET /ping HTTP/1.1\r\nHost: x\r\n X-Folded: obs-fold\r\n\r\n",
    b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Space : y\r\n\r\n",
    b"GET ping HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nhello\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello",
]


@pytest.mark.parametrize("data", MALFORMED_REQUEST_LINES, ids=[f"case{i}" for i in range(len(MALFORMED_REQUEST_LINES))])
def test_malformed_request_is_rejected_not_crashing(server, data):
    resp = answer(server, data)
    if resp is not None:
        assert 400 <= resp.status < 500 or resp.status == 505, f"{data[:60]!r} got {resp.status}"


def test_malformed_request_line_is_400(server):
    resp = answer(server, b"GARBAGE\r\n\r\n")
    assert resp is not None, "connection closed without a 400"
    assert resp.status == 400


@pytest.mark.parametrize("path", ["/users/%zz", "/users/%", "/users/abc%2", "/users/%G0"])
def test_bad_percent_encoding_in_path_is_400(server, path):
    resp = answer(server, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert resp is not None, "connection closed without an answer"
    assert_problem(resp, 400)


@pytest.mark.parametrize("path", [b"/users/%ff%fe", b"/users/%c3%28", b"/users/%ed%a0%80"])
def test_percent_encoded_invalid_utf8_in_path(server, path):
    resp = answer(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp is not None, "connection closed without an answer"
    assert resp.status in (400, 404), resp.status
    assert_problem(resp, resp.status)


def test_raw_invalid_utf8_in_path(server):
    resp = answer(server, b"GET /users/\xff\xfe\x80 HTTP/1.1\r\nHost: x\r\n\r\n")
    if resp is not None:
        assert resp.status in (400, 404), resp.status


def test_invalid_utf8_in_header_value(server):
    resp = answer(server, b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Custom: caf\xe9 \xff\xfe\r\n\r\n")
    assert resp is not None, "connection closed without an answer"
    assert resp.status in (200, 400), f"{resp.status}: {resp.body[:300]!r}"


def test_invalid_utf8_in_query(server):
    for query in (b"q=%ff%fe", b"q=\xff\xfe", b"%ff=1&q=ok"):
        resp = answer(server, b"GET /query?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        if resp is not None:
            assert resp.status in (200, 400), f"{query!r}: {resp.status} {resp.body[:300]!r}"


def test_bad_percent_encoding_in_query(server):
    resp = answer(server, b"GET /query?q=%zz&r=%&s=%4 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp is not None
    assert resp.status in (200, 400), resp.status


def test_thousand_headers(server):
    headers = b"".join(b"X-H-%d: value-%d\r\n" % (i, i) for i in range(1000))
    resp = answer(server, b"GET /headers HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert resp is not None, "connection closed without an answer"
    assert resp.status in (200, 431), resp.status
    if resp.status == 431:
        assert_problem(resp, 431)


def test_ten_thousand_query_params(server):
    query = "&".join(f"k{i}=v{i}" for i in range(10_000))
    start = time.monotonic()
    resp = answer(server, f"GET /query?{query}&q=found HTTP/1.1\r\nHost: x\r\n\r\n".encode(), timeout=10)
    elapsed = time.monotonic() - start
    assert resp is not None, "connection closed without an answer"
    assert resp.status in (200, 414, 431), resp.status
    if resp.status == 200:
        assert resp.json() == {"count": 10_001, "q": "found"}
    assert elapsed < 5, f"10,000 query params took {elapsed:.1f} s"


def test_ten_thousand_repeated_query_params(server):
    query = "&".join("k=v" for _ in range(10_000))
    resp = answer(server, f"GET /query?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), timeout=10)
    assert resp is not None
    assert resp.status in (200, 414, 431), resp.status


def test_very_long_path(server):
    resp = answer(server, b"GET /users/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
    if resp is not None:
        assert resp.status in (200, 400, 404, 414, 431), resp.status


def test_truncated_body_then_close(server):
    with Conn(server.host, server.port) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        conn.sock.shutdown(socket.SHUT_WR)
        try:
            resp = conn.read_response()
            assert resp.status in (400, 408), resp.status
        except (ConnectionClosed, ConnectionResetError):
            pass


def test_truncated_body_abrupt_close(server):
    with Conn(server.host, server.port) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 50)
    time.sleep(0.2)


def test_truncated_chunked_body(server):
    with Conn(server.host, server.port) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc")
        conn.sock.shutdown(socket.SHUT_WR)
        try:
            conn.read_response()
        except (ConnectionClosed, ConnectionResetError):
            pass


def test_truncated_json_body_then_close(server):
    with Conn(server.host, server.port) as conn:
        conn.send(
            b'POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"a":'
        )
        conn.sock.shutdown(socket.SHUT_WR)
        try:
            conn.read_response()
        except (ConnectionClosed, ConnectionResetError):
            pass


def test_truncated_request_head_then_close(server):
    with Conn(server.host, server.port) as conn:
        conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Half: ")
        conn.sock.shutdown(socket.SHUT_WR)
        try:
            conn.read_response()
        except (ConnectionClosed, ConnectionResetError):
            pass


def test_invalid_json_bodies_are_400(server):
    for body in (b"\xff\xfe{}", b"{'single': 1}", b"[1, 2,]", b"NaN", b'{"a": 1} trailing', b"", b"\x00"):
        with Conn(server.host, server.port) as conn:
            resp = conn.request("POST", "/json", headers={"Content-Type": "application/json"}, body=body)
        assert_problem(resp, 400)


def test_deeply_nested_json_does_not_crash(server):
    body = b"[" * 100_000 + b"]" * 100_000
    resp = httpx.post(server.url("/json"), content=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code in (200, 400, 413), resp.status_code


def test_many_hostile_connections_in_a_row(server):
    for data in MALFORMED_REQUEST_LINES * 3:
        answer(server, data)
    assert httpx.get(server.url("/users/ok"), timeout=5).json() == {"name": "ok"}


def test_h2_garbage_after_preface(server):
    with Conn(server.host, server.port) as conn:
        conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64)
        try:
            conn.wait_closed(timeout=5)
        except OSError:
            pass


def test_http11_request_without_host_is_400(server):
    """RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request without a Host header."""
    resp = answer(server, b"GET /ping HTTP/1.1\r\n\r\n")
    assert resp is not None, "connection closed without a 400"
    assert resp.status == 400


def test_http11_request_with_two_hosts_is_400(server):
    """RFC 9112 §3.2: ... or with more than one Host header."""
    resp = answer(server, b"GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert resp is not None, "connection closed without a 400"
    assert resp.status == 400


def test_content_length_plus_transfer_encoding_cannot_smuggle_a_request(server):
    """RFC 9112 §6.3: reject the message, or close the connection after responding to it."""
    smuggled = b"GET /users/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)
    with Conn(server.host, server.port) as conn:
        conn.send(head + body)
        try:
            first = conn.read_response("POST")
        except (ConnectionClosed, ConnectionResetError):
            return
        if first.status == 400:
            return
        try:
            second = conn.read_response()
        except (ConnectionClosed, ConnectionResetError, TimeoutError):
            return
    pytest.fail(f"the bytes after the chunked body were served as a request: {second.status} {second.body[:100]!r}")


def test_absolute_form_request_target_is_served(server):
    """RFC 9112 §3.2.2: a server MUST accept the absolute-form in requests."""
    resp = answer(server, f"GET http://127.0.0.1:{server.port}/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert resp is not None and resp.status == 200, resp
    assert resp.json() == {"pong": True}


def test_asterisk_form_options_does_not_crash(server):
    resp = answer(server, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    if resp is not None:
        assert resp.status < 500, resp.status


def test_garbage_after_a_valid_pipelined_request(server):
    with Conn(server.host, server.port) as conn:
        conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00GARBAGE\xff\r\n\r\n")
        first = conn.read_response()
        assert first.status == 200
        try:
            second = conn.read_response()
            assert 400 <= second.status < 500
        except (ConnectionClosed, ConnectionResetError):
            pass


def test_http2_rapid_reset_flood(server):
    """Open and immediately reset 2000 HTTP/2 streams (CVE-2023-44487 pattern); the server survives."""
    import h2.config
    import h2.connection
    import h2.errors

    sock = socket.create_connection((server.host, server.port), timeout=5)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    headers = [(":method", "GET"), (":path", "/ping"), (":scheme", "http"), (":authority", "x")]
    try:
        for _ in range(2000):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers, end_stream=True)
            conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            sock.sendall(conn.data_to_send())
    except (BrokenPipeError, ConnectionResetError, h2.exceptions.ProtocolError):
        pass  # the server may GOAWAY and close an abusive connection
    finally:
        sock.close()
    with httpx.Client(http1=False, http2=True, timeout=5) as client:
        assert client.get(server.url("/ping")).json() == {"pong": True}


def test_configured_max_header_size_is_honoured(server):
    """robust_app sets max_header_size=256 KiB: a 100 KB header (over the 8 KiB default) is accepted."""
    resp = answer(server, b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Custom: " + b"v" * 100_000 + b"\r\n\r\n")
    assert resp is not None and resp.status == 200, resp
    assert resp.json()["x_custom"] == "v" * 100_000
