"""Every Response constructor, SSE, streaming, ProblemDetails and guards through the real Rust
pipeline, in-process with ``cello.testing.TestClient``: what the client receives (status,
headers, body), not what Python holds."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET

import pytest
from cello import App, Response
from cello.guards import And, Authenticated, Not, Or, PermissionGuard, RoleGuard, UnauthorizedError
from cello.problems import ProblemDetails
from cello.sse import SseEvent, SseStream
from cello.testing import TestClient

pytestmark = pytest.mark.timeout(60)

DATA = bytes(range(256)) * 40  # 10240 bytes
BIG = 3 * 1024 * 1024 + 17


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tc_files")
    (d / "notes.txt").write_text("hello file\n" * 100)
    (d / "data.bin").write_bytes(DATA)
    (d / "page.html").write_text("<p>hi</p>")
    (d / "big.bin").write_bytes(bytes(i % 251 for i in range(BIG)))
    return d


USERS = {
    "admin": {"name": "ada", "roles": ["admin", "staff"], "permissions": ["read", "write"]},
    "staff": {"name": "sam", "roles": ["staff"], "permissions": ["read"]},
    "banned": {"name": "bob", "roles": ["staff", "banned"], "permissions": ["read"]},
}


def load_user(request):
    """An app-wide guard standing in for authentication middleware: X-User → context["user"]."""
    name = request.headers.get("x-user")
    if name in USERS:
        request.context["user"] = USERS[name]
    return True


def build_app(files) -> App:
    app = App()
    app.add_guard(load_user)

    # ---- simple constructors --------------------------------------------------------------
    app.get("/json")(lambda request: Response.json({"k": "v", "n": [1, 2]}, status=201))
    app.get("/text")(lambda request: Response.text("héllo", status=202))
    app.get("/html")(lambda request: Response.html("<h1>hi</h1>"))
    app.get("/binary")(lambda request: Response.binary(b"\x89PNG\x00", content_type="image/png"))
    app.get("/binary-default")(lambda request: Response.binary(b"\x00\x01"))
    app.get("/ctor")(
        lambda request: Response("body", status=299, headers={"X-One": "1"}, content_type="application/x-custom")
    )
    app.get("/ctor-dict")(lambda request: Response({"a": 1}))

    @app.get("/headers")
    def headers(request):
        r = Response.json({})
        r.set_header("X-Added", "v1")
        r.headers["X-View"] = "v2"
        r.add_header("X-Multi", "a")
        r.add_header("X-Multi", "b")
        r.set_header("X-Utf8", "café")
        return r

    @app.get("/injection")
    def injection(request):
        r = Response.json({})
        r.set_header("X-Bad", request.query.get("v", ""))
        return r

    # ---- cookies --------------------------------------------------------------------------
    @app.get("/cookies")
    def cookies(request):
        r = Response.json({"ok": True})
        r.set_cookie(
            "session",
            "abc123",
            max_age=3600,
            path="/app",
            domain="example.com",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        r.set_cookie("theme", "dark")
        r.set_cookie("cross", "1", secure=True, samesite="None")
        r.delete_cookie("old")
        return r

    # ---- redirects, 204, 201 ----------------------------------------------------------------
    @app.get("/redirect/{code:int}")
    def redirect(code: int):
        return Response.redirect("/target?x=1", status=code)

    app.get("/redirect")(lambda request: Response.redirect("/target"))
    app.get("/redirect-permanent")(lambda request: Response.redirect("/target", permanent=True))
    app.get("/redirect-utf8")(lambda request: Response.redirect("/café/ü"))
    app.get("/no-content")(lambda request: Response.no_content())
    app.post("/created")(lambda request: Response.created({"id": 7}, location="/items/7"))
    app.post("/created-empty")(lambda request: Response.created())

    # ---- xml ------------------------------------------------------------------------------
    app.get("/xml")(
        lambda request: Response.xml(
            {"name": "<cello> & \"co\" 'x'", "items": [1, 2], "empty": None}, root_name="data", status=203
        )
    )
    app.get("/xml-raw")(lambda request: Response.xml("<a>raw</a>"))

    # ---- files ----------------------------------------------------------------------------
    app.get("/file/{name}")(lambda name: Response.file(files / name))
    app.get("/download/{name}")(lambda name: Response.file(files / name, filename="rapport 2024 é.csv"))
    app.get("/typed/{name}")(lambda name: Response.file(str(files / name), content_type="text/csv"))
    app.get("/sendfile/{name}")(lambda name: Response.sendfile(files / name))
    app.get("/range/{name}")(
        lambda request: Response.file_range(files / request.params["name"], request.headers.get("range"))
    )

    @app.get("/file-extra")
    def file_extra(request):
        r = Response.file(files / "notes.txt")
        r.set_header("Cache-Control", "max-age=60")
        r.set_cookie("seen", "1")
        return r

    # ---- streaming ------------------------------------------------------------------------
    @app.get("/stream-sync")
    def stream_sync(request):
        def gen():
            yield "a,"
            yield b"b,"
            yield "c"

        return Response.stream(gen(), content_type="text/csv", status=201)

    @app.get("/stream-async")
    async def stream_async(request):
        async def gen():
            for i in range(5):
                await asyncio.sleep(0)
                yield f"{i}\n"

        return Response.stream(gen())

    @app.get("/stream-large")
    def stream_large(request):
        return Response.stream((bytes([i % 256]) * 65536 for i in range(40)), content_type="application/octet-stream")

    # ---- SSE ------------------------------------------------------------------------------
    @app.get("/sse")
    def sse(request):
        return Response.sse(
            [
                SseEvent("line1\nline2", event="update", id="1", retry=5000),
                {"data": {"n": 2}, "id": "2"},
                {"price": 3},
                "plain",
            ]
        )

    @app.get("/sse-async")
    async def sse_async(request):
        async def events():
            for i in range(3):
                await asyncio.sleep(0)
                yield SseEvent(str(i), event="tick")

        return Response.sse(events())

    @app.get("/sse-buffered")
    def sse_buffered(request):
        s = SseStream()
        s.add_data("one").add_event("two", "2").add(SseEvent("three", id="3"))
        return Response.sse(s)

    @app.get("/sse-live")
    async def sse_live(request):
        stream = SseStream(live=True, maxsize=2)
        stream.add_data("hello")

        async def produce():
            for i in range(5):
                await stream.send(SseEvent(i, id=str(i)))
                await asyncio.sleep(0.001)
            stream.close()

        request.context["producer"] = asyncio.get_running_loop().create_task(produce())
        return Response.sse(stream)

    # ---- problems -------------------------------------------------------------------------
    app.get("/problem")(
        lambda request: (
            ProblemDetails("https://example.com/probs/credit", "Out of credit", 403, "balance is 30")
            .with_extension("balance", 30)
            .to_response()
        )
    )

    # ---- guards ---------------------------------------------------------------------------
    ok = {"ok": True}
    app.get("/admin", guards=[RoleGuard("admin")])(lambda request: ok)
    app.get("/staff-or-admin", guards=[RoleGuard(["admin", "staff"])])(lambda request: ok)
    app.get("/both-roles", guards=[RoleGuard(["admin", "staff"], require_all=True)])(lambda request: ok)
    app.get("/write", guards=[PermissionGuard(["read", "write"])])(lambda request: ok)
    app.get("/me", guards=[Authenticated()])(lambda request: {"name": request.context["user"]["name"]})
    app.get("/guests", guards=[Not(Authenticated())])(lambda request: ok)
    app.get("/not-banned", guards=[And(Authenticated(), Not(RoleGuard("banned")))])(lambda request: ok)
    app.get("/either", guards=[Or(RoleGuard("admin"), PermissionGuard("read"))])(lambda request: ok)
    app.get("/ops", guards=[RoleGuard("staff") & ~RoleGuard("banned")])(lambda request: ok)
    app.get("/closed", guards=[lambda request: False])(lambda request: ok)

    def basic_only(request):
        raise UnauthorizedError("log in", www_authenticate='Basic realm="cello"')

    app.get("/basic", guards=[basic_only])(lambda request: ok)
    return app


@pytest.fixture(scope="module")
def client(files):
    # These tests check the 500 responses on the wire, so they do not want the exceptions re-raised.
    with TestClient(build_app(files), raise_server_exceptions=False) as c:
        yield c


def mime(resp) -> str:
    return resp.headers.get("content-type", "").split(";")[0].strip()


def parse_cookie(header: str):
    first, *attrs = [p.strip() for p in header.split(";")]
    name, _, value = first.partition("=")
    parsed = {}
    for a in attrs:
        k, _, v = a.partition("=")
        parsed[k.lower()] = v
    return name, value, parsed


# ---- simple constructors --------------------------------------------------------------------------


def test_json(client):
    r = client.get("/json")
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"k": "v", "n": [1, 2]}


def test_text_html_binary(client):
    r = client.get("/text")
    assert (r.status_code, r.headers["content-type"], r.content) == (
        202,
        "text/plain; charset=utf-8",
        "héllo".encode(),
    )
    r = client.get("/html")
    assert (r.status_code, mime(r), r.text) == (200, "text/html", "<h1>hi</h1>")
    r = client.get("/binary")
    assert (mime(r), r.content) == ("image/png", b"\x89PNG\x00")
    assert mime(client.get("/binary-default")) == "application/octet-stream"


def test_constructor_arguments(client):
    r = client.get("/ctor")
    assert (r.status_code, r.headers["x-one"], mime(r), r.content) == (299, "1", "application/x-custom", b"body")
    r = client.get("/ctor-dict")
    assert (mime(r), r.json()) == ("application/json", {"a": 1})


def test_headers(client):
    r = client.get("/headers")
    assert r.headers["x-added"] == "v1"
    assert r.headers["x-view"] == "v2"
    assert r.headers.get_list("x-multi") == ["a", "b"]
    assert r.headers["x-utf8"].encode("latin-1").decode("utf-8") == "café"


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\x00b"])
def test_header_injection_never_reaches_the_wire(client, value):
    r = client.get("/injection", params={"v": value})
    assert r.status_code == 500
    assert "x-injected" not in r.headers
    assert "x-bad" not in r.headers
    assert mime(r) == "application/problem+json"


# ---- cookies ----------------------------------------------------------------------------------------


def test_cookies(client):
    r = client.get("/cookies")
    assert r.status_code == 200
    got = {}
    for h in r.headers.get_list("set-cookie"):
        name, value, attrs = parse_cookie(h)
        got[name] = (value, attrs)
    assert set(got) == {"session", "theme", "cross", "old"}
    value, attrs = got["session"]
    assert value == "abc123"
    assert attrs == {
        "max-age": "3600",
        "path": "/app",
        "domain": "example.com",
        "secure": "",
        "httponly": "",
        "samesite": "Strict",
    }
    assert got["theme"] == ("dark", {"path": "/", "samesite": "Lax"})
    assert got["cross"][1]["samesite"] == "None" and "secure" in got["cross"][1]
    value, attrs = got["old"]
    assert value == ""
    assert attrs["max-age"] == "0"
    assert attrs["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"


# ---- redirects, 204, 201 ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_status(client, code):
    r = client.get(f"/redirect/{code}")
    assert r.status_code == code
    assert r.headers["location"] == "/target?x=1"


def test_redirect_defaults(client):
    assert client.get("/redirect").status_code == 302
    assert client.get("/redirect-permanent").status_code == 301
    assert client.get("/redirect-utf8").headers["location"] == "/caf%C3%A9/%C3%BC"


def test_redirect_to_a_non_redirect_status_is_a_500(client):
    assert client.get("/redirect/200").status_code == 500


def test_no_content(client):
    r = client.get("/no-content")
    assert r.status_code == 204
    assert r.content == b""
    assert "content-type" not in r.headers


def test_created(client):
    r = client.post("/created")
    assert (r.status_code, r.headers["location"], r.json()) == (201, "/items/7", {"id": 7})
    r = client.post("/created-empty")
    assert (r.status_code, r.content) == (201, b"")


# ---- xml --------------------------------------------------------------------------------------------


def test_xml(client):
    r = client.get("/xml")
    assert r.status_code == 203
    assert mime(r) == "application/xml"
    assert b"&lt;cello&gt; &amp;" in r.content
    root = ET.fromstring(r.content)
    assert root.tag == "data"
    assert root.findtext("name") == "<cello> & \"co\" 'x'"
    assert [i.text for i in root.find("items")] == ["1", "2"]
    assert client.get("/xml-raw").content == b"<a>raw</a>"


# ---- files ------------------------------------------------------------------------------------------


def test_file_streams_with_guessed_type(client, files):
    r = client.get("/file/notes.txt")
    assert r.status_code == 200
    assert r.content == (files / "notes.txt").read_bytes()
    assert r.headers.get_list("content-type") == ["text/plain"]  # exactly one
    assert r.headers["content-length"] == str((files / "notes.txt").stat().st_size)
    assert r.headers["accept-ranges"] == "bytes"
    assert "content-disposition" not in r.headers
    assert mime(client.get("/file/page.html")) == "text/html"


def test_big_file(client, files):
    r = client.get("/file/big.bin")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(BIG)
    assert r.content == (files / "big.bin").read_bytes()


def test_file_with_download_name(client):
    r = client.get("/download/data.bin")
    assert r.content == DATA
    disp = r.headers.get_list("content-disposition")
    assert disp == ["attachment; filename=\"rapport_2024__.csv\"; filename*=UTF-8''rapport%202024%20%C3%A9.csv"]
    assert mime(r) == "application/octet-stream"


def test_file_with_content_type(client):
    r = client.get("/typed/data.bin")
    assert r.headers.get_list("content-type") == ["text/csv"]
    assert r.content == DATA


def test_sendfile(client, files):
    r = client.get("/sendfile/page.html")
    assert (r.status_code, mime(r), r.text) == (200, "text/html", "<p>hi</p>")
    assert "content-disposition" not in r.headers


def test_missing_file_is_404_problem(client):
    r = client.get("/file/nope.txt")
    assert r.status_code == 404
    assert mime(r) == "application/problem+json"


def test_file_keeps_extra_headers_and_cookies(client):
    r = client.get("/file-extra")
    assert r.headers["cache-control"] == "max-age=60"
    assert r.headers["set-cookie"].startswith("seen=1")


def test_head_on_a_file_sends_headers_only(client, files):
    r = client.head("/file/notes.txt")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str((files / "notes.txt").stat().st_size)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-199", 100, 199),
        ("bytes=10000-", 10000, len(DATA) - 1),
        ("bytes=-5", len(DATA) - 5, len(DATA) - 1),
        ("bytes=10200-99999", 10200, len(DATA) - 1),
    ],
)
def test_file_range_206(client, header, start, end):
    r = client.get("/range/data.bin", headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.content == DATA[start : end + 1]


@pytest.mark.parametrize("header", ["bytes=20000-", "bytes=10240-", "bytes=abc", "bytes=9-2", "items=0-5"])
def test_file_range_416(client, header):
    r = client.get("/range/data.bin", headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"


def test_file_range_without_range_header_is_200(client):
    r = client.get("/range/data.bin")
    assert r.status_code == 200
    assert r.content == DATA
    assert "content-range" not in r.headers


def test_python_preview_matches_the_wire(client, files):
    """What ``Response.file_range`` reports in Python is what Rust sends."""
    for header in ("bytes=0-9", "bytes=-5", "bytes=20000-", "bytes=x", None, "bytes=0-1,5-6"):
        preview = Response.file_range(files / "data.bin", header)
        wire = client.get("/range/data.bin", headers={"Range": header} if header else {})
        assert preview.status == wire.status_code, header
        assert preview.headers.get("content-range") == wire.headers.get("content-range"), header
        if wire.status_code != 416:
            assert preview.body() == wire.content, header


# ---- streaming --------------------------------------------------------------------------------------


def test_stream_sync(client):
    r = client.get("/stream-sync")
    assert (r.status_code, mime(r), r.content) == (201, "text/csv", b"a,b,c")


def test_stream_async(client):
    r = client.get("/stream-async")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == "0\n1\n2\n3\n4\n"


def test_stream_large_with_back_pressure(client):
    r = client.get("/stream-large")
    assert len(r.content) == 40 * 65536
    assert r.content == b"".join(bytes([i % 256]) * 65536 for i in range(40))


# ---- SSE --------------------------------------------------------------------------------------------


def test_sse_framing(client):
    r = client.get("/sse")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["cache-control"] == "no-cache"
    assert r.text == (
        "event: update\nid: 1\nretry: 5000\ndata: line1\ndata: line2\n\n"
        'id: 2\ndata: {"n":2}\n\n'
        'data: {"price":3}\n\n'
        "data: plain\n\n"
    )


def test_sse_async_generator(client):
    r = client.get("/sse-async")
    assert r.text == "event: tick\ndata: 0\n\nevent: tick\ndata: 1\n\nevent: tick\ndata: 2\n\n"


def test_sse_buffered_stream(client):
    assert client.get("/sse-buffered").text == "data: one\n\nevent: two\ndata: 2\n\nid: 3\ndata: three\n\n"


def test_sse_live_stream(client):
    r = client.get("/sse-live")
    expected = "data: hello\n\n" + "".join(f"id: {i}\ndata: {i}\n\n" for i in range(5))
    assert r.text == expected


# ---- ProblemDetails ---------------------------------------------------------------------------------


def test_problem_details_response(client):
    r = client.get("/problem")
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert json.loads(r.content) == {
        "type": "https://example.com/probs/credit",
        "title": "Out of credit",
        "status": 403,
        "detail": "balance is 30",
        "balance": 30,
    }


# ---- guards -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "user", "status"),
    [
        ("/admin", None, 401),
        ("/admin", "staff", 403),
        ("/admin", "admin", 200),
        ("/staff-or-admin", "staff", 200),
        ("/staff-or-admin", None, 401),
        ("/both-roles", "staff", 403),
        ("/both-roles", "admin", 200),
        ("/write", "staff", 403),
        ("/write", "admin", 200),
        ("/me", None, 401),
        ("/me", "staff", 200),
        ("/guests", None, 200),
        ("/guests", "staff", 403),
        ("/not-banned", "banned", 403),
        ("/not-banned", "staff", 200),
        ("/not-banned", None, 401),
        ("/either", "staff", 200),
        ("/either", None, 401),
        ("/ops", "staff", 200),
        ("/ops", "banned", 403),
        ("/closed", "admin", 403),
        ("/basic", "admin", 401),
    ],
)
def test_guards(client, path, user, status):
    r = client.get(path, headers={"X-User": user} if user else {})
    assert r.status_code == status, r.text
    if status != 200:
        assert mime(r) == "application/problem+json"
        assert r.json()["status"] == status


def test_guard_401_carries_a_challenge(client):
    assert client.get("/admin").headers["www-authenticate"] == "Bearer"
    assert client.get("/basic").headers["www-authenticate"] == 'Basic realm="cello"'


def test_guarded_handler_sees_the_user(client):
    assert client.get("/me", headers={"X-User": "admin"}).json() == {"name": "ada"}
