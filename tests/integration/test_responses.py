"""Issue 2, item 4 (second half): every Response constructor of API.md over a real socket,
including files streamed from disk (a 1 GiB sparse file), ranges, redirects, cookies and header
validation."""

import os
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)

GIB = 1024**3
MIB = 1024**2


@pytest.fixture(scope="module")
def server(serve):
    return serve("responses_app")


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    text = d / "notes.txt"
    text.write_text("hello file\n" * 100)
    data = d / "data.bin"
    data.write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    sparse = d / "huge.bin"
    with open(sparse, "wb") as f:
        f.truncate(GIB)
    return {"text": text, "data": data, "sparse": sparse}


def mime(resp) -> str:
    return resp.headers.get("content-type", "").split(";")[0].strip().lower()


# --- simple constructors ---------------------------------------------------------------------


def test_json_constructor(client):
    resp = client.get("/json")
    assert resp.status_code == 201
    assert mime(resp) == "application/json"
    assert resp.json() == {"kind": "json", "n": [1, 2]}


def test_text_constructor(client):
    resp = client.get("/text")
    assert resp.status_code == 200
    assert mime(resp) == "text/plain"
    assert resp.content.decode("utf-8") == "héllo text"
    assert resp.headers["content-length"] == str(len("héllo text".encode()))


def test_text_constructor_status(client):
    resp = client.get("/text-status")
    assert resp.status_code == 404
    assert resp.text == "missing"


def test_html_constructor(client):
    resp = client.get("/html")
    assert resp.status_code == 202
    assert mime(resp) == "text/html"
    assert resp.text == "<h1>hi</h1>"


def test_binary_constructor_default_type(client):
    resp = client.get("/binary")
    assert resp.status_code == 200
    assert mime(resp) == "application/octet-stream"
    assert resp.content == b"\x89PNG\x00\x01"


def test_binary_constructor_given_type(client):
    resp = client.get("/binary-typed")
    assert mime(resp) == "image/png"
    assert resp.content == b"\x89PNG\x00\x01"


def test_response_constructor_arguments(client):
    resp = client.get("/constructor")
    assert resp.status_code == 299
    assert resp.headers["x-one"] == "1"
    assert mime(resp) == "application/x-custom"
    assert resp.content == b"custom"


def test_set_header(client):
    assert client.get("/set-header").headers["x-added"] == "value-1"


def test_set_header_rejects_cr_lf_nul(client):
    outcome = client.get("/header-injection").json()
    assert outcome == {
        "crlf": "rejected",
        "lf": "rejected",
        "cr": "rejected",
        "nul": "rejected",
        "name-crlf": "rejected",
    }


# --- redirects, no_content, created ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "location"),
    [
        ("/redirect", 302, "/target"),
        ("/redirect-permanent", 301, "/target"),
        ("/redirect-307", 307, "/target?x=1"),
        ("/redirect-308", 308, "https://example.com/elsewhere"),
    ],
)
def test_redirects(client, path, status, location):
    resp = client.get(path)
    assert resp.status_code == status
    assert resp.headers["location"] == location


def test_no_content(client):
    resp = client.get("/no-content")
    assert resp.status_code == 204
    assert resp.content == b""


def test_no_content_keeps_connection_usable(server):
    with server.connect() as conn:
        assert conn.request("GET", "/no-content").status == 204
        assert conn.request("GET", "/json").status == 201


def test_created_with_location(client):
    resp = client.post("/created")
    assert resp.status_code == 201
    assert resp.headers["location"] == "/items/7"
    assert resp.json() == {"id": 7}


def test_created_without_arguments(client):
    assert client.post("/created-empty").status_code == 201


# --- xml -------------------------------------------------------------------------------------


def test_xml_constructor(client):
    resp = client.get("/xml")
    assert resp.status_code == 200
    assert mime(resp) in ("application/xml", "text/xml")
    root = ET.fromstring(resp.content)
    assert root.tag == "data"
    assert root.findtext("name") == "cello"
    assert root.findtext("note") == "a < b & c"


def test_xml_default_root_and_status(client):
    resp = client.get("/xml-default")
    assert resp.status_code == 202
    root = ET.fromstring(resp.content)
    assert root.findtext("name") == "cello"


# --- cookies ---------------------------------------------------------------------------------


def cookie_attrs(header: str) -> tuple[str, str, dict[str, str]]:
    parts = [p.strip() for p in header.split(";")]
    name, _, value = parts[0].partition("=")
    attrs = {}
    for p in parts[1:]:
        key, _, val = p.partition("=")
        attrs[key.strip().lower()] = val.strip()
    return name, value, attrs


def test_set_cookie_and_delete_cookie(client):
    resp = client.get("/cookies")
    assert resp.status_code == 200
    headers = resp.headers.get_list("set-cookie")
    cookies = {}
    for h in headers:
        name, value, attrs = cookie_attrs(h)
        cookies[name] = (value, attrs)
    assert set(cookies) == {"session", "theme", "until", "old"}, headers

    value, attrs = cookies["session"]
    assert value == "abc123"
    assert attrs.get("max-age") == "3600"
    assert attrs.get("path") == "/app"
    assert attrs.get("domain") in ("example.com", ".example.com")
    assert "secure" in attrs
    assert "httponly" in attrs
    assert attrs.get("samesite", "").lower() == "strict"

    value, attrs = cookies["theme"]
    assert value == "dark"

    value, attrs = cookies["until"]
    assert value == "2030"
    assert attrs.get("expires") == "Wed, 02 Jan 2030 03:04:05 GMT", attrs

    value, attrs = cookies["old"]
    assert value in ("", '""')
    expired = attrs.get("max-age") == "0" or "expires" in attrs and "1970" in attrs["expires"]
    assert expired, f"delete_cookie did not expire the cookie: {attrs}"


# --- files -----------------------------------------------------------------------------------


def test_file_streams_content_with_guessed_type(client, files):
    resp = client.get("/file", params={"path": str(files["text"])})
    assert resp.status_code == 200
    assert resp.content == files["text"].read_bytes()
    assert mime(resp) == "text/plain"
    assert resp.headers.get("content-length") == str(files["text"].stat().st_size)


def test_file_with_filename_and_type(client, files):
    resp = client.get("/file-named", params={"path": str(files["data"])})
    assert resp.status_code == 200
    assert resp.content == files["data"].read_bytes()
    assert mime(resp) == "text/csv"
    disposition = resp.headers.get("content-disposition", "")
    assert "attachment" in disposition.lower()
    assert 'filename="report.csv"' in disposition or "filename=report.csv" in disposition


def test_sendfile(client, files):
    resp = client.get("/sendfile", params={"path": str(files["text"])})
    assert resp.status_code == 200
    assert resp.content == files["text"].read_bytes()
    assert mime(resp) == "text/plain"


def test_sendfile_given_type(client, files):
    resp = client.get("/sendfile-typed", params={"path": str(files["data"])})
    assert resp.content == files["data"].read_bytes()
    assert mime(resp) == "application/x-test"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("route", ["/file", "/sendfile"])
def test_1gib_file_is_streamed_without_loading_it(server, files, route):
    baseline = server.rss()
    peak = baseline
    path = str(files["sparse"])
    buf = bytearray(4 * MIB)
    view = memoryview(buf)
    start = time.monotonic()
    with server.connect(timeout=20) as conn:
        conn.send(f"GET {route}?path={path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        resp = conn.read_head()
        assert resp.status == 200
        assert resp.header("content-length") == str(GIB), resp.headers
        received = len(conn.buf)
        conn.buf = b""
        next_sample = 64 * MIB
        while received < GIB:
            n = conn.sock.recv_into(view, min(len(buf), GIB - received))
            assert n, f"connection closed after {received} of {GIB} bytes"
            received += n
            if received >= next_sample:
                peak = max(peak, server.rss())
                next_sample += 64 * MIB
    elapsed = time.monotonic() - start
    grown = (peak - baseline) / MIB
    assert received == GIB
    assert grown < 200, f"server RSS grew by {grown:.0f} MiB while sending a 1 GiB file ({elapsed:.1f} s)"


# --- file_range ------------------------------------------------------------------------------

DATA = bytes(range(256)) * 40
SIZE = len(DATA)


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-199", 100, 199),
        ("bytes=10000-", 10000, SIZE - 1),
        ("bytes=-5", SIZE - 5, SIZE - 1),
        ("bytes=10000-99999", 10000, SIZE - 1),
    ],
)
def test_file_range_206(client, files, range_header, start, end):
    resp = client.get("/range", params={"path": str(files["data"])}, headers={"Range": range_header})
    assert resp.status_code == 206
    assert resp.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert resp.content == DATA[start : end + 1]
    assert resp.headers["content-length"] == str(end - start + 1)


@pytest.mark.parametrize("range_header", ["bytes=20000-", "bytes=10240-10300"])
def test_file_range_unsatisfiable_is_416(client, files, range_header):
    resp = client.get("/range", params={"path": str(files["data"])}, headers={"Range": range_header})
    assert resp.status_code == 416
    assert resp.headers.get("content-range") == f"bytes */{SIZE}"


@pytest.mark.parametrize("range_header", ["bytes=abc", "bytes=9-2", "items=0-5", "bytes=--1"])
def test_file_range_bad_range_is_416(client, files, range_header):
    resp = client.get("/range", params={"path": str(files["data"])}, headers={"Range": range_header})
    assert resp.status_code == 416


def test_file_range_on_large_file(client, files):
    resp = client.get("/range", params={"path": str(files["sparse"])}, headers={"Range": f"bytes={GIB - 10}-"})
    assert resp.status_code == 206
    assert resp.headers["content-range"] == f"bytes {GIB - 10}-{GIB - 1}/{GIB}"
    assert resp.content == b"\x00" * 10


def test_sparse_file_is_sparse(files):
    """Sanity check of the fixture: the 1 GiB file occupies (almost) no disk."""
    assert os.stat(files["sparse"]).st_blocks * 512 < 10 * MIB
