"""Issue 10 item 6: `enable_static_files(StaticFilesConfig)`, black box over real sockets.

Two mounts (`/static` with an index file and `cache_control`, `/files` with a directory
listing). Every escape the issue lists is tried over HTTP/1.1 (raw socket: nothing normalises
the path) and HTTP/2 (h2c prior knowledge with the h2 library)."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import ROOT, free_port, wait_for_port
from rawhttp import Conn, assert_problem
from test_sidecar import start_dataplane

SECRET = b"TOP-SECRET-CONTENT"
HELLO = b"hello static\n"
JS = b"console.log('hello');\n" * 50


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("static")
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "public"
    (root / "sub").mkdir(parents=True)
    (root / "plain").mkdir()
    (root / "hello.txt").write_bytes(HELLO)
    (root / "index.html").write_bytes(b"<h1>index</h1>")
    (root / "sub" / "index.html").write_bytes(b"<h1>sub index</h1>")
    (root / "sub" / "deep.txt").write_bytes(b"deep")
    (root / "plain" / "x.txt").write_bytes(b"x")
    (root / "style.css").write_bytes(b"body{}")
    (root / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "big.bin").write_bytes(bytes(range(256)) * 1000)
    (root / "app.js").write_bytes(JS)
    (root / "app.js.gz").write_bytes(gzip.compress(JS))
    (root / "app.js.br").write_bytes(b"BROTLI-BYTES")  # only its identity matters here
    (root / ".env").write_bytes(SECRET)
    (root / "link").symlink_to(base / "secret.txt")
    (root / "dirlink").symlink_to(base)
    (root / "inner-link").symlink_to(root / "hello.txt")
    os.mkfifo(root / "fifo")
    listed = base / "listed"
    (listed / "dir").mkdir(parents=True)
    (listed / "a.txt").write_bytes(b"a")
    (listed / "<script>alert(1)<\\script>.txt").write_bytes(b"x")
    (listed / ".hidden").write_bytes(b"h")
    return base


@pytest.fixture(scope="module")
def server(serve, tree):
    return serve("static_app", env={"STATIC_ROOT": str(tree / "public"), "STATIC_LISTED": str(tree / "listed")})


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


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


# ---- serving ---------------------------------------------------------------------------------


def test_file_with_mime_validators_and_cache_control(client):
    r = client.get("/static/hello.txt")
    assert r.status_code == 200 and r.content == HELLO
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["etag"].startswith('"')
    assert r.headers["last-modified"].endswith("GMT")
    assert r.headers["cache-control"] == "public, max-age=60"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == str(len(HELLO))
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/img.png").headers["content-type"] == "image/png"
    assert client.get("/static/big.bin").headers["content-type"] == "application/octet-stream"
    assert client.get("/static/big.bin").content == bytes(range(256)) * 1000
    assert client.get("/static/inner-link").content == HELLO  # a link inside the root is fine


def test_head_has_headers_and_no_body(server):
    with Conn(server.host, server.port) as conn:
        r = conn.request("HEAD", "/static/hello.txt")
    assert r.status == 200 and r.body == b""
    assert r.header("content-length") == str(len(HELLO)) and r.header("etag")


def test_conditional_requests_answer_304(client):
    first = client.get("/static/hello.txt")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for headers in ({"If-None-Match": etag}, {"If-None-Match": f'"nope", W/{etag}'}, {"If-None-Match": "*"}):
        r = client.get("/static/hello.txt", headers=headers)
        assert r.status_code == 304 and r.content == b"", headers
        assert r.headers["etag"] == etag and r.headers["cache-control"] == "public, max-age=60"
    assert client.get("/static/hello.txt", headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get("/static/hello.txt", headers={"If-None-Match": '"other"'}).status_code == 200
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert client.get("/static/hello.txt", headers={"If-Modified-Since": old}).status_code == 200
    # If-None-Match wins over If-Modified-Since
    r = client.get("/static/hello.txt", headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
    assert r.status_code == 200


def test_ranges_206_and_416(client):
    r = client.get("/static/big.bin", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == (bytes(range(256)) * 1000)[10:20]
    assert r.headers["content-range"] == "bytes 10-19/256000"
    assert r.headers["content-length"] == "10"
    r = client.get("/static/big.bin", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == (bytes(range(256)) * 1000)[-5:]
    r = client.get("/static/big.bin", headers={"Range": "bytes=999999-"})
    assert_problem(r, 416)
    assert r.headers["content-range"] == "bytes */256000"
    etag = client.get("/static/big.bin").headers["etag"]
    assert client.get("/static/big.bin", headers={"Range": "bytes=0-0", "If-Range": etag}).status_code == 206
    stale = client.get("/static/big.bin", headers={"Range": "bytes=0-0", "If-Range": '"old"'})
    assert stale.status_code == 200 and len(stale.content) == 256000


def test_index_file(client):
    for path in ("/static", "/static/"):
        r = client.get(path)
        assert r.status_code == 200 and r.content == b"<h1>index</h1>", path
        assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert client.get("/static/sub/").content == b"<h1>sub index</h1>"
    assert client.get("/static/sub").content == b"<h1>sub index</h1>"
    # no index and no listing on this mount: 404
    assert_problem(client.get("/static/plain/"), 404)


def test_directory_listing_is_escaped(client):
    r = client.get("/files/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    html = r.text
    assert '<a href="/files/a.txt">a.txt</a>' in html
    assert '<a href="/files/dir/">dir/</a>' in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;\\script&gt;.txt" in html
    assert "%3Cscript%3E" in html  # the link is percent-encoded
    assert ".hidden" not in html
    assert client.get("/files/a.txt").content == b"a"
    assert "etag" not in client.get("/files/a.txt").headers  # enable_etag=False on this mount
    assert client.get("/files/dir/").status_code == 200


def test_precompressed_siblings(server, client):
    r = h1_get(server, "/static/app.js", headers={"Accept-Encoding": "gzip, br"})
    assert r.header("content-encoding") == "br" and r.body == b"BROTLI-BYTES"
    assert r.header("vary") == "Accept-Encoding" and "javascript" in r.header("content-type")
    r = client.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.content == JS  # httpx gunzips
    r = client.get("/static/app.js", headers={"Accept-Encoding": "gzip;q=0, br;q=0"})
    assert "content-encoding" not in r.headers and r.content == JS
    r = client.get("/static/app.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers and r.content == JS
    etags = {
        h1_get(server, "/static/app.js", headers={"Accept-Encoding": e}).header("etag")
        for e in ("br", "gzip", "identity")
    }
    assert len(etags) == 3  # each representation has its own validator
    # a range asks for the identity bytes
    r = h1_get(server, "/static/app.js", headers={"Accept-Encoding": "br", "Range": "bytes=0-6"})
    assert r.status == 206 and r.body == JS[:7] and r.header("content-encoding") is None


def test_precompressed_sibling_follows_q_values(server):
    r = h1_get(server, "/static/app.js", headers={"Accept-Encoding": "br;q=0.1, gzip"})
    assert r.header("content-encoding") == "gzip" and gzip.decompress(r.body) == JS
    r = h1_get(server, "/static/app.js", headers={"Accept-Encoding": "gzip;q=0.5, br;q=0.5"})
    assert r.header("content-encoding") == "br"  # a tie: br


def test_precompressed_bytes_are_the_sibling(server):
    r = h1_get(server, "/static/app.js", headers={"Accept-Encoding": "br"})
    assert r.header("content-encoding") == "br" and r.body == b"BROTLI-BYTES"


def test_python_routes_still_work_beside_a_mount(client):
    assert client.get("/static/python").json() == {"python": True}


def test_only_get_and_head(client):
    r = client.post("/static/hello.txt")
    assert_problem(r, 405)


# ---- no escape from root ---------------------------------------------------------------------

TRAVERSALS = [
    "../secret.txt",
    "%2e%2e/secret.txt",
    "%2E%2E/secret.txt",
    "..%2fsecret.txt",
    "%2e%2e%2fsecret.txt",
    "%252e%252e/secret.txt",
    "%252e%252e%252fsecret.txt",
    "%25252e%25252e/secret.txt",
    "sub/../../secret.txt",
    "sub/%2e%2e/%2e%2e/secret.txt",
    "..\\secret.txt",
    "..%5csecret.txt",
    "sub%5c..%5c..%5csecret.txt",
    "hello.txt%00.png",
    "%00",
    "/etc/passwd",
    "%2fetc/passwd",
    "%2Fetc%2Fpasswd",
    "C:/Windows/win.ini",
    "link",
    "dirlink/secret.txt",
    ".env",
    "fifo",
]


def _refused(status, ctype, body, what):
    assert SECRET not in body and b"root:" not in body, f"{what}: leaked {body[:200]!r}"
    assert status in (403, 404), f"{what}: {status} {body[:200]!r}"
    assert ctype.split(";")[0] == "application/problem+json", f"{what}: {ctype}"


@pytest.mark.parametrize("attack", TRAVERSALS)
def test_every_escape_is_refused_h1(server, attack):
    for prefix in ("/static/", "/files/"):
        r = h1_get(server, prefix + attack)
        _refused(r.status, r.header("content-type") or "", r.body, prefix + attack)


@pytest.mark.parametrize("attack", TRAVERSALS)
def test_every_escape_is_refused_h2(server, attack):
    status, headers, body = h2_get(server, "/static/" + attack)
    _refused(status, headers.get("content-type", ""), body, "h2 /static/" + attack)


def test_symlink_outside_is_403(server):
    assert h1_get(server, "/static/link").status == 403
    assert h2_get(server, "/static/dirlink/secret.txt")[0] == 403


def test_double_slash_absolute(server):
    r = h1_get(server, "/static//etc/passwd")
    _refused(r.status, r.header("content-type") or "", r.body, "//etc/passwd")
    status, headers, body = h2_get(server, "/static//etc/passwd")
    _refused(status, headers.get("content-type", ""), body, "h2 //etc/passwd")


def test_h2_serves_normally(server):
    status, headers, body = h2_get(server, "/static/sub/deep.txt")
    assert (status, body) == (200, b"deep") and headers["etag"]


# ---- no GIL ----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/hold-gil", "/sleep"])
def test_served_while_python_is_busy(server, tmp_path, route):
    marker = tmp_path / "marker"
    holder = threading.Thread(target=lambda: httpx.get(server.url(f"{route}?marker={marker}"), timeout=30), daemon=True)
    holder.start()
    try:
        deadline = time.monotonic() + 10
        while not marker.exists():
            assert time.monotonic() < deadline, "the busy handler never started"
            time.sleep(0.01)
        with httpx.Client(base_url=server.base_url, timeout=10) as c:
            for path in ("/static/hello.txt", "/static/big.bin", "/files/"):
                start = time.monotonic()
                r = c.get(path)
                took = time.monotonic() - start
                assert r.status_code == 200
                assert took < 0.5, f"{path} took {took:.2f} s while the Python thread was busy"
        assert holder.is_alive(), "the busy handler finished first: the test proved nothing"
    finally:
        holder.join(timeout=30)


# ---- cello.yaml: the sidecar serves the same mounts ------------------------------------------


def test_sidecar_serves_static_mounts_from_cello_yaml(tmp_path, tree):
    up = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "tests/apps/plain_upstream.py"), str(up)])
    try:
        wait_for_port("127.0.0.1", up, 10, upstream)
        config = (
            "staticFiles:\n"
            f"  - root: {tree / 'public'}\n"
            "    prefix: /assets\n"
            "    cacheControl: max-age=5\n"
            f"  - root: {tree / 'listed'}\n"
            "    prefix: /files\n"
            "    directoryListing: true\n"
        )
        proc, port = start_dataplane(tmp_path, up, config)
        try:
            base = f"http://127.0.0.1:{port}"
            r = httpx.get(f"{base}/assets/hello.txt")
            assert r.status_code == 200 and r.content == HELLO and r.headers["cache-control"] == "max-age=5"
            assert "x-upstream" not in r.headers  # answered by the data plane
            assert "a.txt" in httpx.get(f"{base}/files/").text
            with Conn("127.0.0.1", port) as conn:
                bad = conn.request("GET", "/assets/%2e%2e/secret.txt")
            _refused(bad.status, bad.header("content-type") or "", bad.body, "sidecar %2e%2e")
            assert httpx.get(f"{base}/elsewhere").headers["x-upstream"] == "plain"  # still proxied
        finally:
            proc.kill()
            proc.wait()
    finally:
        upstream.kill()
        upstream.wait()
