"""Issue 2, items 5 and 6: Request properties and methods of API.md as a handler sees them over a
real socket; request.json() caching and malformed JSON -> 400 with line/column."""

import hashlib
import re

import httpx
import pytest
from rawhttp import assert_problem

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def server(serve):
    return serve("request_app")


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def ok(resp):
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:2000]}"
    return resp.json()


@pytest.fixture(scope="module")
def seen(client):
    """What /inspect/alice sees for a GET carrying query, headers and cookies."""
    return ok(
        client.get(
            "/inspect/alice?a=1&b=two&tag=x&tag=y&sp=hello%20world&plus=a+b",
            headers={
                "X-Custom": "custom-value",
                "Cookie": "sid=abc; theme=dark",
                "User-Agent": "cello-tests/1.0",
                "Accept": "text/html, application/json;q=0.9",
                "X-Requested-With": "XMLHttpRequest",
            },
        )
    )


def test_method_and_path(seen):
    assert seen["method"] == "GET"
    assert seen["path"] == "/inspect/alice"


def test_params(seen):
    assert seen["params"] == {"name": "alice"}


def test_query_and_query_params(seen):
    for key in ("query", "query_params"):
        q = seen[key]
        assert isinstance(q, dict) and "__error__" not in q, q
        assert q["a"] == "1"
        assert q["b"] == "two"
        assert q["tag"] in ("x", "y")
        assert q["sp"] == "hello world"
        assert q["plus"] == "a b"


def test_query_list(seen):
    assert seen["tags"] == ["x", "y"]
    assert seen["no_tags"] == []


def test_headers_are_case_insensitive(seen):
    assert seen["header_get_exact"] == "custom-value"
    assert seen["header_get_lower"] == "custom-value"
    assert seen["header_get_upper"] == "custom-value"
    assert seen["header_index_mixed"] == "custom-value"
    assert seen["header_contains_upper"] is True
    assert seen["header_missing"] is None


def test_get_header(seen):
    assert seen["get_header"] == "custom-value"
    assert seen["get_header_default"] == "fallback"
    assert seen["get_header_none"] is None


def test_cookies(seen):
    assert seen["cookies"] == {"sid": "abc", "theme": "dark"}


def test_url_scheme_host(seen, server):
    assert seen["scheme"] == "http"
    assert seen["url"].startswith(f"http://127.0.0.1:{server.port}/inspect/alice"), seen["url"]
    assert "a=1" in seen["url"]
    assert seen["host"] in (f"127.0.0.1:{server.port}", "127.0.0.1")
    assert seen["is_secure"] is False


def test_user_agent_accepts_xhr(seen):
    assert seen["user_agent"] == "cello-tests/1.0"
    assert seen["accepts_json"] is True
    assert seen["accepts_html"] is True
    assert seen["accepts_png"] is False
    assert seen["is_xhr"] is True


def test_not_xhr_and_accepts_wildcard(client):
    seen = ok(client.get("/inspect/x", headers={"Accept": "*/*"}))
    assert seen["is_xhr"] is False
    assert seen["accepts_png"] is True


def test_no_body_facts_on_get(seen):
    assert seen["content_length"] in (None, 0)
    assert seen["is_json"] is False
    assert seen["is_form"] is False
    assert seen["is_multipart"] is False


def test_request_id_is_unique(client, seen):
    other = ok(client.get("/inspect/alice"))
    assert isinstance(seen["request_id"], str) and seen["request_id"]
    assert isinstance(other["request_id"], str) and other["request_id"]
    assert seen["request_id"] != other["request_id"]


def test_client_ip_and_client(seen):
    assert seen["client_ip"] == "127.0.0.1"
    assert "127.0.0.1" in seen["client"]


def test_async_handler_sees_the_same(client, seen):
    other = ok(
        client.get(
            "/inspect-async/alice?a=1&b=two&tag=x&tag=y&sp=hello%20world&plus=a+b",
            headers={
                "X-Custom": "custom-value",
                "Cookie": "sid=abc; theme=dark",
                "User-Agent": "cello-tests/1.0",
                "Accept": "text/html, application/json;q=0.9",
                "X-Requested-With": "XMLHttpRequest",
            },
        )
    )
    volatile = {"path", "url", "request_id", "client"}
    assert {k: v for k, v in other.items() if k not in volatile} == {k: v for k, v in seen.items() if k not in volatile}
    assert other["path"] == "/inspect-async/alice"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_json_body_facts(client, method):
    resp = client.request(method, "/inspect/bob", json={"k": 1})
    seen = ok(resp)
    assert seen["method"] == method
    assert seen["content_length"] == int(resp.request.headers["content-length"])
    assert seen["content_type"].startswith("application/json")
    assert seen["is_json"] is True
    assert seen["is_form"] is False


def test_json_with_charset_is_json(client):
    seen = ok(client.post("/inspect/x", content=b"{}", headers={"Content-Type": "application/json; charset=utf-8"}))
    assert seen["is_json"] is True
    assert seen["content_length"] == 2


def test_form_content_type_facts(client):
    seen = ok(client.post("/inspect/x", data={"a": "1"}))
    assert seen["is_form"] is True
    assert seen["is_json"] is False
    assert seen["is_multipart"] is False


def test_multipart_content_type_facts(client):
    seen = ok(client.post("/inspect/x", files={"f": ("a.txt", b"abc")}))
    assert seen["is_multipart"] is True
    assert seen["is_json"] is False


# --- body, text, json --------------------------------------------------------------------------


def test_body_bytes_and_text(client):
    payload = "grüße, body".encode()
    got = ok(client.post("/body", content=payload, headers={"Content-Type": "text/plain; charset=utf-8"}))
    assert got["len"] == len(payload)
    assert got["is_bytes"] is True
    assert got["sha256"] == hashlib.sha256(payload).hexdigest()
    assert got["text"] == "grüße, body"
    assert got["again_equal"] is True


def test_binary_body_is_exact(client):
    payload = bytes(range(256)) * 1000
    got = ok(client.put("/body", content=payload, headers={"Content-Type": "application/octet-stream"}))
    assert got["len"] == len(payload)
    assert got["sha256"] == hashlib.sha256(payload).hexdigest()


def test_empty_body(client):
    got = ok(client.post("/body"))
    assert got["len"] == 0


def test_chunked_request_body(client):
    def parts():
        yield b"abc"
        yield b"def"

    got = ok(client.post("/body", content=parts()))
    assert got["len"] == 6
    assert got["text"] == "abcdef"


@pytest.mark.parametrize("path", ["/json", "/json-async"])
def test_json_parsed_and_cached(client, path):
    data = {"a": [1, 2.5, None, True], "b": {"c": "ü"}, "big": 12345678901234}
    got = ok(client.post(path, json=data))
    assert got == {"data": data, "cached": True}


def test_json_top_level_array(client):
    assert ok(client.post("/json", json=[1, 2, 3])) == {"data": [1, 2, 3], "cached": True}


@pytest.mark.parametrize("path", ["/json", "/json-async"])
def test_malformed_json_is_400_with_line_and_column(client, path):
    body = b'{\n  "a": 1,\n  "b": }\n'
    resp = client.post(path, content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(resp, 400)
    detail = str(problem.get("detail", ""))
    assert re.search(r"line\D{0,3}3", detail, re.IGNORECASE), f"detail does not give line 3: {detail!r}"
    assert re.search(r"col(umn)?\D{0,3}\d+", detail, re.IGNORECASE), f"detail does not give a column: {detail!r}"


def test_truncated_json_is_400(client):
    resp = client.post("/json", content=b'{"a": [1, 2', headers={"Content-Type": "application/json"})
    assert_problem(resp, 400)


def test_server_fine_after_bad_json(client):
    assert ok(client.post("/json", json={"x": 1}))["data"] == {"x": 1}


# --- form and files ----------------------------------------------------------------------------


def test_urlencoded_form(client):
    got = ok(client.post("/form", data={"name": "Zoë & co", "lang": "fr", "empty": ""}))
    assert got["name"] == "Zoë & co"
    assert got["lang"] == "fr"
    assert got["empty"] == ""
    assert got["missing"] is None
    assert got["is_form"] is True


def test_multipart_form_fields(client):
    got = ok(
        client.post("/form", data={"name": "Ada", "lang": "en"}, files={"upload": ("a.txt", b"abc", "text/plain")})
    )
    assert got["name"] == "Ada"
    assert got["lang"] == "en"
    assert got["is_multipart"] is True


def test_multipart_file_upload(client):
    content = b"line one\nline two\n"
    got = ok(client.post("/files", data={"name": "doc"}, files={"upload": ("notes.txt", content, "text/plain")}))
    assert got["filename"] == "notes.txt"
    assert got["content_type"] == "text/plain"
    assert got["size"] == len(content)
    assert got["read_len"] == len(content)
    assert got["sha256"] == hashlib.sha256(content).hexdigest()
    assert got["extension"] in ("txt", ".txt")
    assert got["field_name"] == "doc"


def test_multipart_large_file_upload_and_save(client, tmp_path):
    content = bytes(range(256)) * (3 * 4096)  # 3 MiB: above any sensible in-memory threshold
    target = tmp_path / "saved.bin"
    got = ok(
        client.post(
            "/files",
            params={"save_to": str(target)},
            files={
                "upload": ("big.bin", content, "application/octet-stream"),
                "note": ("n.txt", "héllo", "text/plain"),
            },
        )
    )
    assert got["size"] == len(content)
    assert got["sha256"] == hashlib.sha256(content).hexdigest()
    assert got["note_text"] == "héllo"
    assert target.read_bytes() == content


# --- typed accessors and context -----------------------------------------------------------------


def test_typed_query_and_param_accessors(client):
    got = ok(client.get("/typed/41?s=str&n=12&f=2.5&t=true&fa=false&one=1&zero=0"))
    assert got == {
        "s": "str",
        "s_default": "dflt",
        "s_none": None,
        "n": 12,
        "n_default": 7,
        "f": 2.5,
        "f_default": 1.25,
        "b_true": True,
        "b_false": False,
        "b_one": True,
        "b_zero": False,
        "b_default": True,
        "param": "41",
        "param_int": 41,
        "param_default": "dflt",
        "param_int_default": 5,
    }


def test_context(client):
    got = ok(client.get("/context"))
    assert got["direct_via_get"] == 1
    assert got["via_set_direct"] == {"nested": True}
    assert got["missing"] is None
    assert {"direct", "via_set"} <= set(got["keys"])
    # The data plane's facts are there from the start (issue 8).
    assert {"route", "client_ip", "scheme"} <= set(got["keys"])


def test_context_is_per_request(client):
    ok(client.get("/context"))
    assert ok(client.get("/context-fresh")) == {"direct": None}


def test_untrusted_forwarded_headers_are_ignored(client):
    seen = ok(
        client.get(
            "/inspect/x",
            headers={"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.10", "Forwarded": "for=203.0.113.11"},
        )
    )
    assert seen["client_ip"] == "127.0.0.1"
    assert "127.0.0.1" in seen["client"]


def test_untrusted_forwarded_proto_does_not_make_request_secure(client):
    seen = ok(client.get("/inspect/x", headers={"X-Forwarded-Proto": "https"}))
    assert seen["scheme"] == "http"
    assert seen["is_secure"] is False


def test_request_over_http2_sees_the_same(server):
    with httpx.Client(http1=False, http2=True, timeout=5) as c:
        resp = c.get(server.url("/inspect/h2?tag=a&tag=b"), headers={"X-Custom": "v2", "Cookie": "k=v"})
    assert resp.http_version == "HTTP/2"
    seen = ok(resp)
    assert seen["method"] == "GET"
    assert seen["params"] == {"name": "h2"}
    assert seen["tags"] == ["a", "b"]
    assert seen["header_get_upper"] == "v2"
    assert seen["cookies"] == {"k": "v"}
    assert seen["host"] in (f"127.0.0.1:{server.port}", "127.0.0.1")
    assert seen["client_ip"] == "127.0.0.1"


def test_big_integer_in_request_json_is_exact_or_rejected(client):
    resp = client.post("/json", content=b'{"n": 1180591620717411303424}', headers={"Content-Type": "application/json"})
    if resp.status_code == 400:
        return
    assert ok(resp)["data"] == {"n": 2**70}, "a big integer was silently changed"


def test_untrusted_forwarded_host_does_not_change_host_or_url(client, server):
    seen = ok(client.get("/inspect/x", headers={"X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"}))
    assert "evil" not in str(seen["host"])
    assert "evil" not in seen["url"]


@pytest.mark.parametrize(
    ("accept", "expect_json", "expect_html", "expect_png"),
    [
        (None, True, True, True),  # no Accept header: anything is acceptable
        ("text/*", False, True, False),
        ("application/json;q=0, */*", False, True, True),
        ("image/*;q=0.5, application/json", True, False, True),
        ("TEXT/HTML", False, True, False),
    ],
)
def test_accepts(client, accept, expect_json, expect_html, expect_png):
    headers = {"Accept": accept} if accept is not None else {}
    resp = client.get("/inspect/x", headers=headers)
    if accept is None:
        assert "accept" not in {k.lower() for k in resp.request.headers} or resp.request.headers["accept"] == "*/*"
    seen = ok(resp)
    assert (seen["accepts_json"], seen["accepts_html"], seen["accepts_png"]) == (expect_json, expect_html, expect_png)
