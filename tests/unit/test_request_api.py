"""Issue 2, item 5: a Request constructed directly, as API.md allows for tests:
Request(method, path, params=None, query=None, headers=None, body=None)."""

import json

import pytest
from cello import Request


def make(**kwargs):
    defaults = {
        "params": {"id": "42"},
        "query": {"page": "2", "ratio": "0.5", "flag": "true", "name": "x"},
        "headers": {"Content-Type": "application/json", "X-Token": "abc", "User-Agent": "unit/1"},
        "body": b'{"a": [1, 2], "b": null}',
    }
    defaults.update(kwargs)
    return Request("POST", "/users/42", **defaults)


def test_minimal_construction():
    req = Request("GET", "/")
    assert req.method == "GET"
    assert req.path == "/"
    assert dict(req.params) == {}
    assert dict(req.query) == {}
    assert req.body() == b""


def test_method_path_params_query():
    req = make()
    assert req.method == "POST"
    assert req.path == "/users/42"
    assert dict(req.params) == {"id": "42"}
    assert dict(req.query) == {"page": "2", "ratio": "0.5", "flag": "true", "name": "x"}
    assert dict(req.query_params) == dict(req.query)


def test_headers_are_case_insensitive():
    req = make()
    assert req.headers["x-token"] == "abc"
    assert req.headers["X-TOKEN"] == "abc"
    assert req.headers.get("X-Token") == "abc"
    assert "x-token" in req.headers
    assert req.headers.get("missing") is None
    assert req.get_header("x-TOKEN") == "abc"
    assert req.get_header("missing", "d") == "d"
    assert req.get_header("missing") is None


def test_body_text_json():
    req = make()
    assert req.body() == b'{"a": [1, 2], "b": null}'
    assert req.text() == '{"a": [1, 2], "b": null}'
    data = req.json()
    assert data == {"a": [1, 2], "b": None}
    assert req.json() is data, "json() is not cached"


def test_bad_json_raises():
    req = make(body=b"{not json")
    with pytest.raises(Exception) as info:
        req.json()
    assert not isinstance(info.value, AttributeError | TypeError | NameError), repr(info.value)


def test_content_type_predicates():
    req = make()
    assert req.content_type().startswith("application/json")
    assert req.is_json() is True
    assert req.is_form() is False
    assert req.is_multipart() is False
    form = make(headers={"Content-Type": "application/x-www-form-urlencoded"}, body=b"a=1&b=two+words")
    assert form.is_form() is True and form.is_json() is False
    multi = make(headers={"Content-Type": "multipart/form-data; boundary=xyz"}, body=b"")
    assert multi.is_multipart() is True


def test_urlencoded_form():
    req = make(headers={"Content-Type": "application/x-www-form-urlencoded"}, body=b"a=1&b=two+words&c=%C3%A9")
    form = req.form()
    assert form.get("a") == "1"
    assert form.get("b") == "two words"
    assert form.get("c") == "é"


def test_multipart_form_and_files():
    body = (
        b"--xyz\r\n"
        b'Content-Disposition: form-data; name="title"\r\n\r\n'
        b"hello\r\n"
        b"--xyz\r\n"
        b'Content-Disposition: form-data; name="upload"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n"
        b"file body\r\n"
        b"--xyz--\r\n"
    )
    req = make(headers={"Content-Type": "multipart/form-data; boundary=xyz"}, body=body)
    assert req.form().get("title") == "hello"
    upload = req.files()["upload"]
    upload = upload[0] if isinstance(upload, list | tuple) else upload
    assert upload.filename == "a.txt"
    assert upload.content_type == "text/plain"
    assert upload.size() == 9
    assert upload.read() == b"file body"
    assert upload.read_text() == "file body"
    assert upload.extension() in ("txt", ".txt")


def test_typed_query_accessors():
    req = make()
    assert req.get_query_param("name") == "x"
    assert req.get_query_param("missing") is None
    assert req.get_query_param("missing", "d") == "d"
    assert req.get_query_int("page") == 2
    assert req.get_query_int("missing", 9) == 9
    assert req.get_query_float("ratio") == 0.5
    assert req.get_query_float("missing", 1.5) == 1.5
    assert req.get_query_bool("flag") is True
    assert req.get_query_bool("missing", False) is False


def test_param_accessors():
    req = make()
    assert req.get_param("id") == "42"
    assert req.get_param_int("id") == 42
    assert req.get_param("missing") is None
    assert req.get_param("missing", "d") == "d"
    assert req.get_param_int("missing", 3) == 3


def test_context():
    req = make()
    assert req.get_context("user") is None
    req.set_context("user", {"id": 1})
    assert req.context["user"] == {"id": 1}
    req.context["role"] = "admin"
    assert req.get_context("role") == "admin"
    other = make()
    assert other.get_context("user") is None, "context shared between requests"


def test_header_helpers():
    req = make(headers={"User-Agent": "unit/1", "Accept": "application/json", "X-Requested-With": "XMLHttpRequest"})
    assert req.user_agent() == "unit/1"
    assert req.accepts("application/json") is True
    assert req.accepts("image/png") is False
    assert req.is_xhr() is True
    assert make(headers={}).is_xhr() is False


def test_cookies():
    req = make(headers={"Cookie": "a=1; b=two"})
    assert dict(req.cookies) == {"a": "1", "b": "two"}
    assert dict(make(headers={}).cookies) == {}


def test_content_length():
    req = make()
    assert req.content_length in (None, len(req.body()))
    with_header = make(headers={"Content-Length": "24"})
    assert with_header.content_length == 24


def test_query_list():
    req = make()
    assert list(req.query_list("page")) == ["2"]
    assert list(req.query_list("missing")) == []


def test_json_result_is_plain_python():
    data = make(body=b'{"n": 1.5, "s": "\\u00e9", "l": [true, false]}').json()
    assert json.dumps(data) == json.dumps({"n": 1.5, "s": "é", "l": [True, False]})
