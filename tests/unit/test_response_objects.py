"""Response, SseEvent/SseStream, WebSocketMessage and ProblemDetails used directly in Python
(no server): what each constructor produces, header and cookie validation, and the
``_cello_parts()`` contract read by Rust."""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest
from cello.problems import ProblemDetails
from cello.responses import Response, parse_range, to_xml
from cello.sse import SseEvent, SseStream, sse_chunks, sse_comment
from cello.websocket import WebSocketMessage


def cookies(resp: Response) -> dict[str, tuple[str, dict[str, str]]]:
    out = {}
    for h in resp.headers.get_list("set-cookie"):
        first, *attrs = [p.strip() for p in h.split(";")]
        name, _, value = first.partition("=")
        parsed = {}
        for a in attrs:
            k, _, v = a.partition("=")
            parsed[k.lower()] = v
        out[name] = (value, parsed)
    return out


# ---- constructor and basic accessors -----------------------------------------------------------


def test_defaults():
    r = Response()
    assert r.status == 200
    assert r.body() == b""
    assert r.content_type() is None
    assert r.content_length() == 0
    assert r._cello_parts() == (200, [], 0, None)


@pytest.mark.parametrize(
    ("body", "ctype", "raw"),
    [
        ("héllo", "text/plain; charset=utf-8", "héllo".encode()),
        (b"\x00\x01", "application/octet-stream", b"\x00\x01"),
        (bytearray(b"ab"), "application/octet-stream", b"ab"),
        ({"a": 1}, "application/json", b'{"a":1}'),
        ([1, 2], "application/json", b"[1,2]"),
    ],
)
def test_body_kinds(body, ctype, raw):
    r = Response(body)
    assert r.content_type() == ctype
    assert r.body() == raw
    assert r.content_length() == len(raw)


def test_explicit_content_type_wins_and_headers_override_it():
    assert Response("x", content_type="text/csv").content_type() == "text/csv"
    r = Response("x", content_type="text/csv", headers={"Content-Type": "text/x-other"})
    assert r.content_type() == "text/x-other"
    assert len(r.headers.get_list("content-type")) == 1


def test_headers_from_list_of_pairs_keep_duplicates_only_via_add():
    r = Response(headers=[("X-A", "1"), ("X-B", "2")])
    assert r.headers["x-a"] == "1"
    r.add_header("X-A", "3")
    assert r.headers.get_list("X-A") == ["1", "3"]
    assert r.headers["X-A"] == "1, 3"


@pytest.mark.parametrize("status", [0, 99, 1000, -1])
def test_bad_status(status):
    with pytest.raises(ValueError):
        Response(status=status)


def test_status_setter_and_type():
    r = Response()
    r.status = 418
    assert r.status == 418 == r.status_code
    with pytest.raises(TypeError):
        r.status = "teapot"
    with pytest.raises(TypeError):
        r.status = True


def test_headers_view_is_live_and_case_insensitive():
    r = Response.json({})
    h = r.headers
    h["X-Thing"] = "1"
    assert r.get_header("x-thing") == "1"
    assert "X-THING" in h
    assert r.headers["x-thing"] == "1"
    del h["x-thing"]
    assert "x-thing" not in r.headers
    with pytest.raises(KeyError):
        del h["x-thing"]
    assert r.headers == {"content-type": "application/json"}
    assert list(r.headers) == ["content-type"]
    assert len(r.headers) == 1


def test_set_header_replaces_case_insensitively():
    r = Response()
    r.set_header("X-A", "1")
    r.set_header("x-a", "2")
    assert r.headers.multi_items() == [("x-a", "2")]


@pytest.mark.parametrize("value", ["a\r\nb", "a\nb", "a\rb", "a\x00b", "a\x01b", "a\x7fb"])
def test_set_header_rejects_control_characters(value):
    with pytest.raises(ValueError):
        Response().set_header("X", value)
    with pytest.raises(ValueError):
        Response(headers={"X": value})
    with pytest.raises(ValueError):
        Response().headers["X"] = value


@pytest.mark.parametrize("name", ["X\r\nY", "X\n", "X\x00", "X Y", "X:Y", "", "X(Y)"])
def test_set_header_rejects_bad_names(name):
    with pytest.raises(ValueError):
        Response().set_header(name, "v")


def test_set_header_allows_tab_and_non_ascii():
    r = Response()
    r.set_header("X-Tab", "a\tb")
    r.set_header("X-Utf8", "café")
    assert r.headers["x-utf8"] == "café"


# ---- constructors --------------------------------------------------------------------------------


def test_json_text_html_binary():
    assert Response.json({"a": [1]}, status=201)._cello_parts() == (
        201,
        [("content-type", "application/json")],
        0,
        b'{"a":[1]}',
    )
    assert Response.text(42).body() == b"42"
    assert Response.html("<b>").content_type() == "text/html; charset=utf-8"
    b = Response.binary(b"\x89PNG", content_type="image/png", status=202)
    assert (b.status, b.content_type(), b.body()) == (202, "image/png", b"\x89PNG")


def test_json_uses_the_rust_encoder_for_rich_types():
    import uuid

    u = uuid.UUID(int=1)
    r = Response.json({"when": datetime(2024, 1, 2, 3, 4, 5), "id": u})
    doc = json.loads(r.body())
    assert doc["id"] == str(u)
    assert doc["when"].startswith("2024-01-02T03:04:05")


def test_redirects():
    assert Response.redirect("/a").status == 302
    assert Response.redirect("/a", permanent=True).status == 301
    assert Response.redirect("/a", permanent=False).status == 302
    for s in (303, 307, 308):
        r = Response.redirect("/a", status=s)
        assert r.status == s
        assert r.headers["location"] == "/a"
        assert r.body() == b""
        assert r.content_type() is None
    assert Response.redirect("/a", permanent=True, status=307).status == 307


def test_redirect_rejects_header_injection_and_encodes_non_ascii():
    for bad in ("/a\r\nSet-Cookie: x=1", "/a\nb", "/a\x00"):
        with pytest.raises(ValueError):
            Response.redirect(bad)
    with pytest.raises(ValueError):
        Response.redirect("/a", status=200)
    r = Response.redirect("/café?q=a b&x=%20")
    assert r.headers["location"] == "/caf%C3%A9?q=a%20b&x=%20"


def test_no_content_and_created():
    r = Response.no_content()
    assert r._cello_parts() == (204, [], 0, None)
    c = Response.created({"id": 1}, location="/items/1")
    assert c.status == 201
    assert c.headers["location"] == "/items/1"
    assert json.loads(c.body()) == {"id": 1}
    empty = Response.created()
    assert (empty.status, empty.body(), empty.content_type()) == (201, b"", None)


def test_xml_escaping_nesting_and_root():
    r = Response.xml(
        {"name": "a < b & c", "q": 'say "hi"', "items": [1, 2], "none": None, "flag": True, "nested": {"x": "y"}},
        root_name="data",
    )
    assert r.content_type() == "application/xml"
    body = r.body()
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b"a &lt; b &amp; c" in body
    root = ET.fromstring(body)
    assert root.tag == "data"
    assert root.findtext("name") == "a < b & c"
    assert root.findtext("q") == 'say "hi"'
    assert [e.text for e in root.find("items")] == ["1", "2"]
    assert root.find("none").text is None
    assert root.findtext("flag") == "true"
    assert root.find("nested").findtext("x") == "y"


def test_xml_default_root_lists_and_odd_keys():
    assert ET.fromstring(Response.xml({"a": 1}).body()).tag == "root"
    root = ET.fromstring(Response.xml([{"a": 1}, 2], status=202).body())
    assert [c.tag for c in root] == ["item", "item"]
    odd = ET.fromstring(to_xml({"1st": "x", "a b": "y", "<evil>": "z"}))
    assert [(c.tag, c.get("key"), c.text) for c in odd] == [
        ("item", "1st", "x"),
        ("item", "a b", "y"),
        ("item", "<evil>", "z"),
    ]
    with pytest.raises(ValueError):
        Response.xml({}, root_name="bad name")


def test_xml_invalid_characters_are_replaced_and_strings_pass_through():
    root = ET.fromstring(to_xml({"c": "a\x00b\x1fc"}))
    assert root.findtext("c") == "a\ufffdb\ufffdc"
    assert Response.xml("<a/>").body() == b"<a/>"
    assert Response.xml(b"<b/>").body() == b"<b/>"


def test_xml_dataclass():
    @dataclass
    class Point:
        x: int
        y: int

    root = ET.fromstring(to_xml(Point(1, 2), "point"))
    assert (root.findtext("x"), root.findtext("y")) == ("1", "2")


def test_stream_is_kind_2():
    chunks = ["a", b"b"]
    r = Response.stream(chunks, content_type="text/csv", status=201)
    status, headers, kind, payload = r._cello_parts()
    assert (status, headers, kind) == (201, [("content-type", "text/csv")], 2)
    assert payload is chunks
    assert r.content_length() is None
    assert r.body() == b""
    assert Response.stream(iter(())).content_type() == "text/plain; charset=utf-8"
    with pytest.raises(TypeError):
        Response.stream(42)


# ---- files ---------------------------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "data.bin"
    p.write_bytes(bytes(range(100)))
    return p


def test_file_parts_and_view(data_file, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    r = Response.file(txt)
    assert r.status == 200
    assert r.content_type() == "text/plain"
    assert r.content_length() == 5
    assert r.body() == b"hello"
    assert r.headers["accept-ranges"] == "bytes"
    # Rust gets the content type in the payload and no duplicate header.
    assert r._cello_parts() == (200, [], 1, (str(txt), "text/plain", None, None, False))


def test_file_with_filename_sets_attachment(data_file):
    r = Response.file(str(data_file), filename="rapport é.csv", content_type="text/csv")
    disp = r.headers["content-disposition"]
    assert disp == "attachment; filename=\"rapport__.csv\"; filename*=UTF-8''rapport%20%C3%A9.csv"
    _, headers, _, payload = r._cello_parts()
    assert ("content-disposition", disp) in headers
    assert payload[1] == "text/csv"


def test_sendfile_is_inline_and_guesses_type(data_file, tmp_path):
    r = Response.sendfile(data_file)
    assert "content-disposition" not in r.headers
    assert r.content_type() == "application/octet-stream"
    page = tmp_path / "x.html"
    page.write_text("<p>")
    assert Response.sendfile(page).content_type() == "text/html"
    assert Response.sendfile(page, content_type="application/x-y").content_type() == "application/x-y"


def test_missing_file_previews_404(tmp_path):
    r = Response.file(tmp_path / "nope.txt")
    assert r.status == 404
    assert r.content_length() is None
    assert r.body() == b""
    assert r._cello_parts()[0] == 200  # Rust decides (404) when it opens the file


def test_file_range(data_file):
    r = Response.file_range(data_file, "bytes=10-19")
    assert r.status == 206
    assert r.headers["content-range"] == "bytes 10-19/100"
    assert r.content_length() == 10
    assert r.body() == bytes(range(10, 20))
    status, headers, kind, payload = r._cello_parts()
    assert (status, kind, payload[3:]) == (200, 1, ("bytes=10-19", True))
    assert not any(k == "content-range" for k, _ in headers)  # computed by Rust


@pytest.mark.parametrize("header", ["bytes=200-", "bytes=oops", "bytes=9-2", "items=0-1", "bytes=--1", "bytes=-0"])
def test_file_range_unsatisfiable(data_file, header):
    r = Response.file_range(data_file, header)
    assert r.status == 416
    assert r.headers["content-range"] == "bytes */100"
    assert r.body() == b""


def test_file_range_without_header_is_whole_file(data_file):
    r = Response.file_range(data_file, None)
    assert r.status == 200
    assert r.content_length() == 100


@pytest.mark.parametrize(
    ("header", "length", "expected"),
    [
        (None, 10, True),
        ("bytes=0-4", 10, (0, 4)),
        ("bytes=5-", 10, (5, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=0-100", 10, (0, 9)),
        ("bytes=10-", 10, None),
        ("bytes=5-2", 10, None),
        ("items=0-1", 10, None),
        ("bytes=x-y", 10, None),
        ("bytes=0-1,3-4", 10, True),
        ("bytes=0-0", 0, None),
        ("bytes=-20", 10, (0, 9)),
        (" bytes=1-2 ", 10, (1, 2)),
    ],
)
def test_parse_range_matches_the_rust_cases(header, length, expected):
    assert parse_range(header, length) == expected


def test_explicit_status_on_file_is_sent(data_file):
    r = Response.file(data_file)
    r.status = 203
    assert r._cello_parts()[0] == 203
    assert r.status == 203


# ---- cookies -------------------------------------------------------------------------------------


def test_set_cookie_all_attributes():
    r = Response.json({})
    r.set_cookie(
        "session",
        "abc123",
        max_age=3600,
        expires=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        path="/app",
        domain="example.com",
        secure=True,
        httponly=True,
        samesite="Strict",
    )
    (header,) = r.headers.get_list("set-cookie")
    assert header == (
        "session=abc123; Expires=Wed, 02 Jan 2030 03:04:05 GMT; Max-Age=3600; Domain=example.com; "
        "Path=/app; Secure; HttpOnly; SameSite=Strict"
    )


def test_set_cookie_defaults():
    r = Response()
    r.set_cookie("theme", "dark")
    assert r.headers["set-cookie"] == "theme=dark; Path=/; SameSite=Lax"
    r2 = Response()
    r2.set_cookie("t", "v", path=None, samesite=None)
    assert r2.headers["set-cookie"] == "t=v"


def test_set_cookie_expires_forms():
    now = datetime.now(timezone.utc)
    r = Response()
    r.set_cookie("a", "1", expires=3600)
    r.set_cookie("b", "1", expires=timedelta(hours=1))
    r.set_cookie("c", "1", expires=datetime(2030, 5, 6, 7, 8, 9))  # naive = UTC
    r.set_cookie("d", "1", expires=date(2030, 5, 6))
    r.set_cookie("e", "1", expires="Thu, 01 Jan 2037 00:00:00 GMT")
    got = {k: v[1]["expires"] for k, v in cookies(r).items()}
    for name in ("a", "b"):
        when = parsedate_to_datetime(got[name])
        assert abs((when - now).total_seconds() - 3600) < 5
        assert got[name].endswith(" GMT")
    assert got["c"] == "Mon, 06 May 2030 07:08:09 GMT"
    assert got["d"] == "Mon, 06 May 2030 00:00:00 GMT"
    assert got["e"] == "Thu, 01 Jan 2037 00:00:00 GMT"
    offset = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    r.set_cookie("f", "1", expires=offset)
    assert cookies(r)["f"][1]["expires"] == "Tue, 01 Jan 2030 10:00:00 GMT"


def test_set_cookie_max_age_timedelta():
    r = Response()
    r.set_cookie("a", "1", max_age=timedelta(minutes=2))
    assert cookies(r)["a"][1]["max-age"] == "120"
    with pytest.raises(TypeError):
        r.set_cookie("a", "1", max_age="60")


@pytest.mark.parametrize("name", ["", "a b", "a;b", "a=b", "a,b", "a\r\nb", "é"])
def test_set_cookie_rejects_bad_names(name):
    with pytest.raises(ValueError):
        Response().set_cookie(name, "v")


@pytest.mark.parametrize("value", ["a b", "a;b", "a,b", 'a"b', "a\\b", "a\r\nSet-Cookie: x", "é"])
def test_set_cookie_rejects_bad_values(value):
    with pytest.raises(ValueError):
        Response().set_cookie("n", value)


def test_set_cookie_accepts_quoted_and_empty_values():
    r = Response()
    r.set_cookie("q", '"abc"')
    r.set_cookie("e", "")
    assert cookies(r)["q"][0] == '"abc"'
    assert cookies(r)["e"][0] == ""


def test_set_cookie_rejects_injection_in_attributes():
    for kwargs in ({"path": "/a;Secure"}, {"domain": "a.com; x"}, {"expires": "x; HttpOnly"}, {"path": "/\n"}):
        with pytest.raises(ValueError):
            Response().set_cookie("n", "v", **kwargs)


def test_samesite_values():
    for given, shown in (("lax", "Lax"), ("STRICT", "Strict"), ("None", "None")):
        r = Response()
        r.set_cookie("n", "v", samesite=given, secure=True)
        assert cookies(r)["n"][1]["samesite"] == shown
    with pytest.raises(ValueError, match="secure"):
        Response().set_cookie("n", "v", samesite="none")
    with pytest.raises(ValueError):
        Response().set_cookie("n", "v", samesite="sometimes")


def test_cookie_prefixes():
    with pytest.raises(ValueError):
        Response().set_cookie("__Secure-id", "v")
    with pytest.raises(ValueError):
        Response().set_cookie("__Host-id", "v", secure=True, domain="example.com")
    r = Response()
    r.set_cookie("__Host-id", "v", secure=True)
    assert "Secure" in r.headers["set-cookie"]


def test_setting_a_cookie_again_replaces_it_but_other_paths_stay():
    r = Response()
    r.set_cookie("a", "1")
    r.set_cookie("a", "2")
    r.set_cookie("a", "3", path="/other")
    values = r.headers.get_list("set-cookie")
    assert values == ["a=2; Path=/; SameSite=Lax", "a=3; Path=/other; SameSite=Lax"]


def test_delete_cookie():
    r = Response()
    r.set_cookie("old", "x")
    r.delete_cookie("old")
    r.delete_cookie("other", path="/p", domain="example.com")
    r.delete_cookie("__Host-s")
    got = cookies(r)
    value, attrs = got["old"]
    assert value == ""
    assert attrs["max-age"] == "0"
    assert attrs["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert attrs["path"] == "/"
    assert len(r.headers.get_list("set-cookie")) == 3  # the earlier "old=x" was replaced
    assert got["other"][1]["domain"] == "example.com"
    assert got["other"][1]["path"] == "/p"
    assert "secure" in got["__Host-s"][1]


def test_cookies_travel_as_separate_headers_to_rust():
    r = Response.json({})
    r.set_cookie("a", "1")
    r.set_cookie("b", "2")
    headers = r._cello_parts()[1]
    assert [k for k, _ in headers].count("set-cookie") == 2


# ---- SSE -----------------------------------------------------------------------------------------


def test_sse_event_framing():
    assert SseEvent("hello").to_sse_string() == "data: hello\n\n"
    ev = SseEvent("line1\nline2\r\nline3\rline4", event="update", id="7", retry=3000)
    assert ev.to_sse_string() == (
        "event: update\nid: 7\nretry: 3000\ndata: line1\ndata: line2\ndata: line3\ndata: line4\n\n"
    )
    assert SseEvent("").to_sse_string() == "data:\n\n"
    assert SseEvent("a\n\nb").to_sse_string() == "data: a\ndata:\ndata: b\n\n"
    assert SseEvent(None, id="5").to_sse_string() == "id: 5\n\n"
    assert SseEvent({"k": [1]}).to_sse_string() == 'data: {"k":[1]}\n\n'
    assert SseEvent(b"raw").data == "raw"


def parse_sse(text: str) -> list[dict]:
    """A reference parser following the HTML spec's event-stream interpretation."""
    events, data, fields = [], [], {}
    for line in re.split(r"\r\n|\r|\n", text):
        if line == "":
            if data:
                events.append({**fields, "data": "\n".join(data)})
            data, fields = [], {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    return events


def test_sse_event_round_trips_through_a_spec_parser():
    text = "".join(e.to_sse_string() for e in [SseEvent("a\nb", event="x", id="1"), SseEvent(" lead"), SseEvent("{}")])
    assert parse_sse(text) == [
        {"event": "x", "id": "1", "data": "a\nb"},
        {"data": " lead"},
        {"data": "{}"},
    ]


@pytest.mark.parametrize("field", ["event", "id"])
def test_sse_fields_reject_line_breaks(field):
    with pytest.raises(ValueError):
        SseEvent("x", **{field: "a\nb"})
    with pytest.raises(ValueError):
        SseEvent("x", **{field: "a\rb"})


def test_sse_retry_validation():
    with pytest.raises(ValueError):
        SseEvent("x", retry=-1)
    with pytest.raises(ValueError):
        SseEvent("x", retry=1.5)


def test_sse_from_value():
    assert SseEvent.from_value({"data": "d", "event": "e"}) == SseEvent("d", event="e")
    assert SseEvent.from_value({"price": 1}) == SseEvent('{"price":1}')
    assert SseEvent.from_value("s") == SseEvent("s")
    e = SseEvent("x")
    assert SseEvent.from_value(e) is e


def test_sse_comment():
    assert sse_comment("ping") == ": ping\n\n"
    assert sse_comment() == ":\n\n"


def test_sse_stream_buffer():
    s = SseStream()
    assert s.is_empty() and s.len() == 0 and len(s) == 0
    s.add(SseEvent("a")).add_data("b").add_event("tick", {"n": 1}).add({"data": "c", "id": "9"})
    assert s.len() == 4 == len(s)
    assert not s.is_empty()
    assert [e.data for e in s] == ["a", "b", '{"n":1}', "c"]
    assert s.events[2].event == "tick"
    assert s.to_sse_string().count("\n\n") == 4


def test_response_sse_headers_and_chunks():
    r = Response.sse([SseEvent("a", event="x"), {"data": "b"}, "c"])
    assert r.content_type() == "text/event-stream"
    assert r.headers["cache-control"] == "no-cache"
    assert r._cello_parts()[2] == 2
    assert list(r._cello_parts()[3]) == ["event: x\ndata: a\n\n", "data: b\n\n", "data: c\n\n"]


def test_response_sse_single_string_is_one_event():
    assert list(sse_chunks("only")) == ["data: only\n\n"]


def collect_async(aiterable) -> list:
    async def run():
        return [x async for x in aiterable]

    return asyncio.run(run())


def test_response_sse_async_iterable():
    async def gen():
        yield SseEvent("1")
        yield "2"

    r = Response.sse(gen())
    assert collect_async(r._cello_parts()[3]) == ["data: 1\n\n", "data: 2\n\n"]


def test_buffered_stream_async_iteration_ends():
    s = SseStream().add_data("x")
    assert collect_async(sse_chunks(s)) == ["data: x\n\n"]


def test_live_stream_send_and_close():
    async def run():
        s = SseStream(live=True, maxsize=1)
        s.add_data("buffered")
        got = []

        async def consume():
            async for chunk in sse_chunks(s):
                got.append(chunk)

        task = asyncio.create_task(consume())
        for i in range(3):
            await s.send({"data": str(i), "id": str(i)})
        s.close()
        await asyncio.wait_for(task, 2)
        with pytest.raises(RuntimeError):
            await s.send("late")
        return got

    assert asyncio.run(run()) == [
        "data: buffered\n\n",
        "id: 0\ndata: 0\n\n",
        "id: 1\ndata: 1\n\n",
        "id: 2\ndata: 2\n\n",
    ]


def test_live_stream_close_with_full_queue_still_ends():
    async def run():
        s = SseStream(maxsize=1)
        s.send_nowait("a")
        s.close()  # the queue is full: the sentinel does not fit
        assert s.closed
        return [e.data async for e in s]

    assert asyncio.run(run()) == ["a"]


# ---- WebSocketMessage ----------------------------------------------------------------------------


def test_websocket_message_types():
    t = WebSocketMessage.text("héllo")
    assert (t.msg_type, t.text, t.data) == ("text", "héllo", "héllo".encode())
    assert t.is_text() and not t.is_binary() and not t.is_close()
    b = WebSocketMessage.binary(b"\x00\x01")
    assert (b.msg_type, b.text, b.data) == ("binary", None, b"\x00\x01")
    assert b.is_binary()
    p = WebSocketMessage.ping(b"x")
    assert (p.msg_type, p.data) == ("ping", b"x")
    c = WebSocketMessage.close(1001, "going away")
    assert c.is_close() and c.code == 1001 and c.reason == "going away"
    assert c.data == b"\x03\xe9going away"
    assert WebSocketMessage.close().code == 1000
    assert WebSocketMessage.text('{"a":1}').json() == {"a": 1}
    assert WebSocketMessage.text("a") == WebSocketMessage.text("a")


def test_websocket_message_validation():
    with pytest.raises(ValueError):
        WebSocketMessage.close(999)
    with pytest.raises(ValueError):
        WebSocketMessage.close(1005)
    with pytest.raises(ValueError):
        WebSocketMessage.close(1000, "x" * 124)
    with pytest.raises(ValueError):
        WebSocketMessage.ping(b"x" * 126)
    with pytest.raises(TypeError):
        WebSocketMessage.text(b"bytes")
    with pytest.raises(ValueError):
        WebSocketMessage("nonsense")


# ---- ProblemDetails ------------------------------------------------------------------------------


def test_problem_details():
    p = ProblemDetails("https://example.com/probs/out-of-credit", "Out of credit", 403, "balance 30", "/acct/1")
    assert p.with_extension("balance", 30).with_extension("accounts", ["/acct/1"]) is p
    doc = json.loads(p.to_json())
    assert doc == {
        "type": "https://example.com/probs/out-of-credit",
        "title": "Out of credit",
        "status": 403,
        "detail": "balance 30",
        "instance": "/acct/1",
        "balance": 30,
        "accounts": ["/acct/1"],
    }
    r = p.to_response()
    assert r.status == 403
    assert r.content_type() == "application/problem+json"
    assert json.loads(r.body()) == doc


def test_problem_details_defaults_and_validation():
    doc = json.loads(ProblemDetails(None, None, 404).to_json())
    assert doc == {"type": "about:blank", "title": "Not Found", "status": 404}
    with pytest.raises(ValueError):
        ProblemDetails("about:blank", "x", 99)
    with pytest.raises(ValueError):
        ProblemDetails("about:blank", "x", 400).with_extension("status", 1)


def test_live_stream_consumer_gone_stops_the_producer():
    async def run():
        s = SseStream(live=True, maxsize=1)
        chunks = sse_chunks(s)
        s.send_nowait("first")
        assert await chunks.__anext__() == "data: first\n\n"
        blocked = asyncio.create_task(s.send("second"))  # fits
        await asyncio.sleep(0)
        third = asyncio.create_task(s.send("third"))  # waits: the queue is full
        await asyncio.sleep(0)
        assert not third.done()
        await chunks.aclose()  # what the server does when the client disconnects
        await asyncio.wait_for(asyncio.gather(blocked, third), 1)
        assert s.disconnected
        with pytest.raises(ConnectionResetError):
            await s.send("late")

    asyncio.run(run())


def test_headers_object_keeps_every_cookie():
    a = Response()
    a.set_cookie("x", "1")
    a.set_cookie("y", "2")
    b = Response(headers=a.headers)
    assert b.headers.get_list("set-cookie") == a.headers.get_list("set-cookie")
