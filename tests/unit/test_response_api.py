"""Issue 2, item 4: the Response API of API.md used directly in Python (status, headers, body(),
content_type(), content_length(), constructors, set_header validation)."""

import json
import xml.etree.ElementTree as ET

import pytest
from cello import Response


def header(resp, name):
    """Case-insensitive lookup in resp.headers (a dict or a header-map-like object)."""
    headers = resp.headers
    for key in list(headers.keys()):
        if key.lower() == name.lower():
            return headers[key]
    return None


def body_bytes(resp):
    body = resp.body()
    return body.encode() if isinstance(body, str) else bytes(body)


def mime(resp):
    return (resp.content_type() or "").split(";")[0].strip().lower()


def test_defaults():
    resp = Response()
    assert resp.status == 200
    assert body_bytes(resp) == b""


def test_constructor_arguments():
    resp = Response("body", status=404, headers={"X-A": "1"}, content_type="text/plain")
    assert resp.status == 404
    assert header(resp, "x-a") == "1"
    assert mime(resp) == "text/plain"
    assert body_bytes(resp) == b"body"
    assert resp.content_length() == 4


def test_bytes_body():
    resp = Response(b"\x00\x01", content_type="application/octet-stream")
    assert body_bytes(resp) == b"\x00\x01"
    assert resp.content_length() == 2


def test_json():
    resp = Response.json({"a": [1, 2]})
    assert resp.status == 200
    assert mime(resp) == "application/json"
    assert json.loads(body_bytes(resp)) == {"a": [1, 2]}
    assert resp.content_length() == len(body_bytes(resp))
    assert Response.json([], status=201).status == 201


def test_text_and_html():
    text = Response.text("héllo")
    assert mime(text) == "text/plain"
    assert body_bytes(text) == "héllo".encode()
    assert text.content_length() == len("héllo".encode())
    assert Response.text("x", status=418).status == 418
    html = Response.html("<p>x</p>", status=201)
    assert mime(html) == "text/html"
    assert html.status == 201


def test_binary():
    resp = Response.binary(b"\x89PNG")
    assert mime(resp) == "application/octet-stream"
    assert body_bytes(resp) == b"\x89PNG"
    typed = Response.binary(b"x", content_type="image/png", status=202)
    assert mime(typed) == "image/png"
    assert typed.status == 202


def test_redirects():
    assert Response.redirect("/a").status == 302
    assert header(Response.redirect("/a"), "location") == "/a"
    assert Response.redirect("/a", permanent=True).status == 301
    assert Response.redirect("/a", permanent=False).status == 302
    for status in (303, 307, 308):
        assert Response.redirect("/a", status=status).status == status


def test_no_content_and_created():
    resp = Response.no_content()
    assert resp.status == 204
    assert body_bytes(resp) == b""
    created = Response.created({"id": 1}, location="/items/1")
    assert created.status == 201
    assert header(created, "location") == "/items/1"
    assert json.loads(body_bytes(created)) == {"id": 1}
    assert Response.created().status == 201


def test_xml():
    resp = Response.xml({"name": "a & b"}, root_name="thing")
    assert mime(resp) in ("application/xml", "text/xml")
    root = ET.fromstring(body_bytes(resp))
    assert root.tag == "thing"
    assert root.findtext("name") == "a & b"
    assert Response.xml({"a": 1}, status=202).status == 202


def test_file_and_sendfile(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("hello")
    resp = Response.file(str(path))
    assert resp.status == 200
    assert mime(resp) == "text/plain"
    named = Response.file(str(path), filename="x.csv", content_type="text/csv")
    assert mime(named) == "text/csv"
    assert "x.csv" in (header(named, "content-disposition") or "")
    assert Response.sendfile(str(path)).status == 200
    assert mime(Response.sendfile(str(path), content_type="application/x-y")) == "application/x-y"


def test_file_range(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(100)))
    resp = Response.file_range(str(path), "bytes=10-19")
    assert resp.status == 206
    assert header(resp, "content-range") == "bytes 10-19/100"
    assert Response.file_range(str(path), "bytes=200-").status == 416
    assert Response.file_range(str(path), "bytes=oops").status == 416


def test_set_header():
    resp = Response.json({})
    resp.set_header("X-New", "v")
    assert header(resp, "x-new") == "v"


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb", "a\rb", "a\x00b"])
def test_set_header_rejects_cr_lf_nul_in_value(value):
    resp = Response.json({})
    with pytest.raises(ValueError):
        resp.set_header("X-Bad", value)


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\x00b", "a\x7fb", 7])
def test_set_header_checks_each_value_of_a_name_set_before(value):
    resp = Response.json({})
    resp.set_header("X-Seen", "ok")  # the name is now known valid
    if isinstance(value, int):
        resp.set_header("x-seen", value)
        assert resp.headers.get_list("X-Seen") == [str(value)]
        return
    with pytest.raises(ValueError):
        resp.set_header("X-Seen", value)
    assert resp.headers.get_list("x-seen") == ["ok"]


def test_set_header_replaces_every_header_of_the_name_and_keeps_the_others():
    resp = Response.json({}, status=201)
    resp.add_header("X-Multi", "1")
    resp.add_header("x-multi", "2")
    resp.set_header("X-Other", "o")
    resp.set_header("X-MULTI", "3")
    assert resp.headers.multi_items() == [("content-type", "application/json"), ("X-Other", "o"), ("X-MULTI", "3")]


@pytest.mark.parametrize("name", ["X-Bad\r\nInjected", "X-Bad\n", "X\x00Bad"])
def test_set_header_rejects_cr_lf_nul_in_name(name):
    resp = Response.json({})
    with pytest.raises(ValueError):
        resp.set_header(name, "v")


def test_set_cookie_and_delete_cookie_add_headers():
    resp = Response.json({})
    resp.set_cookie("sid", "abc", max_age=60, path="/", domain=None, secure=True, httponly=True, samesite="Lax")
    resp.delete_cookie("old")
    text = repr(resp.headers) + str(list(resp.headers.items()) if hasattr(resp.headers, "items") else "")
    assert "sid=abc" in text
    assert "old=" in text
