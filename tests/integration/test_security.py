"""Issue 9 item 6/7 attacks, black box: path traversal through `{rest:path}` and
`Response.file(root=)`, non-regular files, handler-set framing headers, JSON limits.

Each attack is tried over HTTP/1.1 (raw socket, so nothing normalises the path) and, where the
path matters, over HTTP/2 (h2c prior knowledge with the h2 library)."""

from __future__ import annotations

import os
import socket
import time

import pytest
from rawhttp import Conn, assert_problem

SECRET = b"TOP-SECRET-CONTENT"
PUBLIC = b"public hello"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """base/secret.txt (outside), base/public/hello.txt, base/public/sub/deep.txt,
    base/public/link -> ../secret.txt (a symlink out of the root)."""
    base = tmp_path_factory.mktemp("sec")
    (base / "secret.txt").write_bytes(SECRET)
    public = base / "public"
    (public / "sub").mkdir(parents=True)
    (public / "hello.txt").write_bytes(PUBLIC)
    (public / "sub" / "deep.txt").write_bytes(b"deep")
    (public / "link").symlink_to(base / "secret.txt")
    (public / "inner-link").symlink_to(public / "hello.txt")
    return base


@pytest.fixture(scope="module")
def server(serve, tree):
    return serve("security_app", env={"SECURITY_ROOT": str(tree / "public")})


def h1_get(server, path: str, headers: dict[str, str] | None = None):
    with Conn(server.host, server.port, timeout=10) as conn:
        return conn.request("GET", path, headers=headers)


def h2_get(server, path: str, timeout: float = 10.0):
    """GET `path` exactly as given (`:path` is not normalised) over h2c prior knowledge.
    Returns (status, headers dict, body)."""
    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    )
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "127.0.0.1")],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    status, headers, body = None, {}, b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
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
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)) and event.stream_id == sid:
                    return status, headers, body
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    finally:
        sock.close()
    raise AssertionError(f"h2 GET {path}: no complete answer (status {status})")


TRAVERSALS = [
    "../secret.txt",
    "%2e%2e/secret.txt",
    "%2E%2E/secret.txt",
    "..%2fsecret.txt",
    "..%2Fsecret.txt",
    "%2e%2e%2fsecret.txt",
    "%252e%252e/secret.txt",
    "%252e%252e%252fsecret.txt",
    "sub/../../secret.txt",
    "..%5csecret.txt",
    "/etc/passwd",
    "%2fetc/passwd",
    "./../secret.txt",
    "hello.txt%00.png",
]


def _assert_refused(status, ctype, body, what):
    assert SECRET not in body and b"root:" not in body, f"{what}: leaked {body[:200]!r}"
    assert status == 404, f"{what}: {status} {body[:200]!r}"
    assert ctype.split(";")[0] == "application/problem+json", f"{what}: {ctype}"


@pytest.mark.parametrize("prefix", ["/static/", "/star/"])
@pytest.mark.parametrize("attack", TRAVERSALS)
def test_path_param_refuses_traversal_h1(server, prefix, attack):
    resp = h1_get(server, prefix + attack)
    _assert_refused(resp.status, resp.header("content-type") or "", resp.body, prefix + attack)


@pytest.mark.parametrize("prefix", ["/static/", "/star/"])
@pytest.mark.parametrize("attack", TRAVERSALS)
def test_path_param_refuses_traversal_h2(server, prefix, attack):
    status, headers, body = h2_get(server, prefix + attack)
    _assert_refused(status, headers.get("content-type", ""), body, "h2 " + prefix + attack)


def test_double_slash_absolute_form_is_refused(server):
    # The issue's `/static//etc/passwd`: the parameter would be `/etc/passwd`.
    resp = h1_get(server, "/static//etc/passwd")
    _assert_refused(resp.status, resp.header("content-type") or "", resp.body, "h1 /static//etc/passwd")
    status, headers, body = h2_get(server, "/static//etc/passwd")
    _assert_refused(status, headers.get("content-type", ""), body, "h2 /static//etc/passwd")


def test_path_param_still_serves_normal_files(server):
    assert h1_get(server, "/static/hello.txt").body == PUBLIC
    assert h1_get(server, "/static/sub/deep.txt").body == b"deep"
    assert h1_get(server, "/star/sub/deep.txt").body == b"deep"
    status, _, body = h2_get(server, "/static/sub/deep.txt")
    assert (status, body) == (200, b"deep")


def test_unsafe_opt_in_passes_the_value_through(server):
    assert h1_get(server, "/unsafe/../x/%2e%2e").json() == {"rest": "../x/.."}
    assert h1_get(server, "/unsafe//etc/passwd").json() == {"rest": "/etc/passwd"}


@pytest.mark.parametrize("route", ["/rooted/", "/rooted-send/", "/rooted-range/"])
@pytest.mark.parametrize("attack", [*TRAVERSALS, "link", "/etc/passwd", "%2Fetc%2Fpasswd"])
def test_file_root_refuses_paths_outside_it(server, route, attack):
    resp = h1_get(server, route + attack)
    _assert_refused(resp.status, resp.header("content-type") or "", resp.body, route + attack)
    assert_problem(resp, 404)


@pytest.mark.parametrize("attack", ["../secret.txt", "link", "/etc/passwd"])
def test_file_root_refuses_over_h2(server, attack):
    status, headers, body = h2_get(server, "/rooted/" + attack)
    _assert_refused(status, headers.get("content-type", ""), body, "h2 /rooted/" + attack)


def test_file_root_serves_inside_it(server, tree):
    assert h1_get(server, "/rooted/hello.txt").body == PUBLIC
    assert h1_get(server, "/rooted/sub/../hello.txt").body == PUBLIC  # stays inside: fine
    assert h1_get(server, "/rooted/inner-link").body == PUBLIC  # a link that stays inside
    assert h1_get(server, "/rooted-send/sub/deep.txt").body == b"deep"
    assert h1_get(server, f"/rooted/{tree}/public/hello.txt").body == PUBLIC  # absolute but inside
    resp = h1_get(server, "/rooted-range/hello.txt", headers={"Range": "bytes=0-5"})
    assert (resp.status, resp.body) == (206, PUBLIC[:6])


def test_file_root_in_process_api(tree):
    from cello import Response

    root = tree / "public"
    assert Response.file("hello.txt", root=root).body() == PUBLIC
    refused = Response.file("../secret.txt", root=root)
    assert refused.status == 404 and SECRET not in refused.body()
    assert refused.content_type() == "application/problem+json"
    assert Response.sendfile("link", root=str(root)).status == 404
    assert os.path.exists(root / "link")


# ---- non-regular files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fifo(tree):
    path = tree / "pipe"
    if not path.exists():
        os.mkfifo(path)
    return path


def _fifo_burst(server, path, total=600, workers=40):
    """`total` GETs for a file response on `path`, `workers` keep-alive connections at once;
    returns the slowest answer time and the statuses seen."""
    from concurrent.futures import ThreadPoolExecutor

    def run(n):
        slowest, statuses = 0.0, []
        with Conn(server.host, server.port, timeout=8) as conn:
            for _ in range(n):
                t0 = time.monotonic()
                resp = conn.request("GET", f"/anyfile?path={path}")
                slowest = max(slowest, time.monotonic() - t0)
                statuses.append(resp.status)
                assert_problem(resp, 404)
        return slowest, statuses

    per = total // workers
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(run, [per] * workers))
    return max(r[0] for r in results), [s for r in results for s in r[1]]


def test_fifo_is_refused_promptly_and_files_are_still_served(serve, tree, fifo):
    server = serve("security_app", env={"SECURITY_ROOT": str(tree / "public")}, fresh=True)
    slowest, statuses = _fifo_burst(server, fifo)
    assert statuses == [404] * 600
    assert slowest < 3.0, f"a FIFO request took {slowest:.1f} s"
    resp = h1_get(server, f"/anyfile?path={tree / 'public' / 'hello.txt'}")
    assert (resp.status, resp.body) == (200, PUBLIC)
    resp = h1_get(server, f"/anyrange?path={fifo}", headers={"Range": "bytes=0-3"})
    assert_problem(resp, 404)
    # Nothing is left pinned on a blocking thread, so SIGTERM ends the process at once.
    t0 = time.monotonic()
    server.proc.send_signal(15)
    try:
        server.proc.wait(timeout=4)
    except Exception:  # noqa: BLE001 -- reported below
        pass
    took = time.monotonic() - t0
    assert server.proc.poll() is not None, "the server did not stop within 4 s of SIGTERM"
    assert took < 4


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/null", "DIR"])
def test_devices_and_directories_are_not_served(server, tree, target):
    path = tree / "public" if target == "DIR" else target
    with Conn(server.host, server.port, timeout=5) as conn:
        resp = conn.request("GET", f"/anyfile?path={path}")
    assert_problem(resp, 404)


def test_fifo_over_h2(server, fifo):
    status, headers, body = h2_get(server, f"/anyfile?path={fifo}", timeout=5)
    assert status == 404 and headers["content-type"] == "application/problem+json"


# ---- handler-set framing headers -----------------------------------------------------------

EIGHT = b"12345678"


def _two_in_a_row(server, path, method="GET"):
    """Two requests on one keep-alive connection: the second answer proves the first one was
    framed as it really was (a wrong length leaves bytes that poison the next response)."""
    with Conn(server.host, server.port, timeout=5) as conn:
        first = conn.request(method, path)
        second = conn.request("GET", "/static/hello.txt")
    assert (second.status, second.body) == (200, PUBLIC), f"connection out of sync after {path}: {second}"
    return first


@pytest.mark.parametrize(
    "path", ["/framing/short-length", "/framing/long-length", "/framing/tuple-length", "/framing/te", "/framing/hop"]
)
def test_handler_framing_headers_are_replaced(server, path):
    resp = _two_in_a_row(server, path)
    assert (resp.status, resp.body) == (200, EIGHT)
    assert resp.header_list("content-length") == ["8"], resp.headers
    assert resp.header("transfer-encoding") is None
    assert resp.header("keep-alive") is None and resp.header("upgrade") is None
    assert resp.header("connection") is None


def test_transfer_encoding_other_than_chunked_is_dropped(server):
    resp = _two_in_a_row(server, "/framing/te-gzip")
    assert resp.body == EIGHT and resp.header("transfer-encoding") is None


def test_two_contradicting_lengths_on_json(server):
    resp = _two_in_a_row(server, "/framing/dict-length")
    assert resp.header_list("content-length") == [str(len(resp.body))] and resp.json() == {"a": 1}


def test_streamed_body_ignores_handler_length(server):
    resp = _two_in_a_row(server, "/framing/stream-length")
    assert resp.body == EIGHT
    assert resp.header("content-length") is None and resp.header("transfer-encoding") == "chunked"


def test_file_response_ignores_handler_framing(server, tree):
    resp = _two_in_a_row(server, f"/framing/file-length?path={tree / 'public' / 'hello.txt'}")
    assert resp.body == PUBLIC
    assert resp.header_list("content-length") == [str(len(PUBLIC))] and resp.header("transfer-encoding") is None


def test_empty_body_length_and_head(server):
    resp = _two_in_a_row(server, "/framing/empty-length")
    assert resp.body == b"" and resp.header("content-length") in (None, "0")
    # A HEAD answer may announce the length a GET would have: kept.
    resp = _two_in_a_row(server, "/framing/head-length", method="HEAD")
    assert resp.header("content-length") == "1234"


def test_error_response_framing(server):
    resp = _two_in_a_row(server, "/framing/error-length")
    assert resp.status == 418 and resp.header_list("content-length") == [str(len(resp.body))]


def test_connection_close_request_is_honoured(server):
    with Conn(server.host, server.port, timeout=5) as conn:
        resp = conn.request("GET", "/framing/close")
        assert resp.body == EIGHT and resp.header("connection") == "close"
        assert conn.wait_closed(3) is not None


def test_framing_headers_over_h2(server):
    status, headers, body = h2_get(server, "/framing/hop")
    assert (status, body) == (200, EIGHT)
    assert "connection" not in headers and "upgrade" not in headers and "keep-alive" not in headers
    status, headers, body = h2_get(server, "/framing/short-length")
    assert (status, body, headers.get("content-length")) == (200, EIGHT, "8")


# ---- JSON limits ---------------------------------------------------------------------------


def _post(server, body: bytes):
    with Conn(server.host, server.port, timeout=10) as conn:
        return conn.request("POST", "/echo", headers={"Content-Type": "application/json"}, body=body)


def test_json_echo_at_the_depth_limit(server):
    doc = b"[" * 512 + b"]" * 512
    resp = _post(server, doc)
    assert (resp.status, resp.body) == (200, doc)


@pytest.mark.parametrize("depth", [513, 1000, 5000])
def test_json_deeper_than_the_limit_is_400(server, depth):
    resp = _post(server, b"[" * depth + b"]" * depth)
    problem = assert_problem(resp, 400)
    assert "nesting too deep" in problem.get("detail", ""), problem


@pytest.mark.parametrize("doc", [b"1e999999", b"-1e999999", b'{"n": 1e400}', b"[99999999999999999999999, 1e309]"])
def test_json_infinite_numbers_are_400(server, doc):
    resp = _post(server, doc)
    assert_problem(resp, 400)
    assert b"null" not in resp.body
