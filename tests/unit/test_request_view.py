"""Issue 2, item 5: the Rust `Request` view in process — the choices API.md leaves open
(repeated keys, header decoding, forwarded headers, text decoding, uploads) and robustness
against junk input."""

import pytest
from cello import Request
from cello._cello import JsonDecodeError
from cello.errors import HTTPException

# --- construction --------------------------------------------------------------------------------


def test_path_with_query_and_query_argument_merge():
    req = Request("get", "/items?a=1&tag=x", query={"tag": ["y", "z"], "n": 5})
    assert req.method == "GET"
    assert req.path == "/items"
    assert req.query == {"a": "1", "tag": "z", "n": "5"}
    assert req.query_list("tag") == ["x", "y", "z"]
    assert req.query_string == "a=1&tag=x&tag=y&tag=z&n=5"


def test_non_ascii_and_spaces_in_constructed_path():
    req = Request("GET", "/a b/é")
    assert req.path == "/a b/é"
    assert req.url.endswith("/a%20b/%C3%A9")


def test_absolute_url_sets_scheme_and_host():
    req = Request("GET", "https://api.example.com:8443/x?q=1")
    assert req.scheme == "https" and req.is_secure()
    assert req.host() == "api.example.com:8443"
    assert req.url == "https://api.example.com:8443/x?q=1"


def test_body_types():
    assert Request("POST", "/", body="é").body() == "é".encode()
    assert Request("POST", "/", body=bytearray(b"ab")).body() == b"ab"
    assert Request("POST", "/", body=memoryview(b"cd")).body() == b"cd"
    req = Request("POST", "/", body=b"xyz")
    assert req.body() is req.body()
    with pytest.raises(TypeError):
        Request("POST", "/", body=123)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "G ET", "path": "/"},
        {"method": "GET", "path": "/", "headers": {"bad name": "x"}},
        {"method": "GET", "path": "/", "headers": {"x": "a\nb"}},
        {"method": "GET", "path": "/", "client": ("not-an-ip", 1)},
        {"method": "GET", "path": "/", "trusted_proxies": ["nope"]},
    ],
)
def test_invalid_construction_is_value_error(kwargs):
    with pytest.raises(ValueError):
        Request(**kwargs)


# --- query, params --------------------------------------------------------------------------------


def test_query_last_value_wins_and_decoding():
    req = Request("GET", "/?a=1&a=2&sp=hello%20world&plus=a+b&bad=%FF&empty=&novalue")
    assert req.query["a"] == "2"
    assert req.query_list("a") == ["1", "2"]
    assert req.query["sp"] == "hello world"
    assert req.query["plus"] == "a b"
    assert req.query["bad"] == "\ufffd"
    assert req.query["empty"] == "" and req.query["novalue"] == ""
    assert req.query is req.query_params


def test_typed_query_accessors_fall_back_to_default_on_junk():
    req = Request("GET", "/?n=12&bad=x&f=2.5&inf=inf&b=YES&nb=maybe&neg=-3&space=%207%20")
    assert req.get_query_int("n") == 12
    assert req.get_query_int("neg") == -3
    assert req.get_query_int("space") == 7
    assert req.get_query_int("bad", 0) == 0
    assert req.get_query_int("f") is None
    assert req.get_query_float("f") == 2.5
    assert req.get_query_float("n") == 12.0
    assert req.get_query_float("inf", -1.0) == -1.0
    assert req.get_query_bool("b") is True
    assert req.get_query_bool("nb", False) is False
    assert req.get_query_bool("missing") is None


def test_params_and_param_accessors():
    req = Request("GET", "/u/7", params={"id": 7, "slug": "a-b"})
    assert req.params == {"id": "7", "slug": "a-b"}
    assert req.get_param_int("id") == 7
    assert req.get_param_int("slug", -1) == -1
    assert req.route is None


# --- headers ---------------------------------------------------------------------------------------


def test_headers_mapping_semantics():
    req = Request("GET", "/", headers=[("X-A", "1"), ("x-a", "2"), ("Accept", "text/html")])
    h = req.headers
    assert h is req.headers
    assert h["X-A"] == "1" and h.get("x-a") == "1"
    assert h.getlist("X-a") == ["1", "2"] and h.get_all("x-a") == ["1", "2"]
    assert h.getlist("missing") == []
    assert "ACCEPT" in h and "missing" not in h and 42 not in h
    assert h.keys() == ["x-a", "x-a", "accept"]
    assert h.values() == ["1", "2", "text/html"]
    assert h.items() == [("x-a", "1"), ("x-a", "2"), ("accept", "text/html")]
    assert len(h) == 3
    assert list(h) == h.keys()
    assert dict(h) == {"x-a": "1", "accept": "text/html"}
    with pytest.raises(KeyError):
        h["missing"]
    assert h.get("missing", "d") == "d"
    assert h.get(None) is None


def test_header_values_are_latin1_so_any_bytes_decode():
    req = Request("GET", "/", headers={"X-Bin": b"caf\xe9 \xff", "User-Agent": b"\xc3\xa9"})
    assert req.headers["x-bin"] == "café ÿ"
    assert req.get_header("user-agent") == "Ã©"
    assert req.user_agent() == "Ã©"


def test_header_helpers():
    req = Request("GET", "/", headers={"X-Requested-With": "xmlhttprequest", "Accept": "*/*, image/png;q=0"})
    assert req.is_xhr()
    assert req.accepts("text/plain")
    assert not req.accepts("image/png")
    assert Request("GET", "/").accepts("anything/at-all")
    assert Request("GET", "/").user_agent() is None
    assert Request("GET", "/").content_type() is None


def test_content_type_predicates():
    def ct(value):
        return Request("POST", "/", headers={"Content-Type": value})

    assert ct("application/problem+json").is_json()
    assert ct("Application/JSON; charset=utf-8").is_json()
    assert not ct("text/plain").is_json()
    assert ct("application/x-www-form-urlencoded; charset=utf-8").is_form()
    assert ct("multipart/form-data; boundary=x").is_multipart()
    assert not Request("POST", "/").is_json()


def test_content_length():
    assert Request("POST", "/", headers={"Content-Length": " 12 "}).content_length == 12
    assert Request("POST", "/", headers={"Content-Length": "junk"}).content_length is None
    assert Request("POST", "/", body=b"abc").content_length is None


# --- cookies ---------------------------------------------------------------------------------------


def test_cookies_tolerate_junk_and_repeated_headers():
    req = Request(
        "GET",
        "/",
        headers=[("Cookie", 'a=1; junk; =x; q="quoted"; u=caf\xc3\xa9'.encode("latin-1")), ("Cookie", "b=2; a=dup")],
    )
    assert req.cookies == {"a": "1", "q": "quoted", "u": "café", "b": "2"}
    assert req.cookies is req.cookies


# --- body decoding ---------------------------------------------------------------------------------


def test_text_uses_charset_and_replaces_bad_bytes():
    assert Request("POST", "/", body=b"caf\xc3\xa9").text() == "café"
    assert Request("POST", "/", body=b"bad \xff").text() == "bad \ufffd"
    latin = Request("POST", "/", headers={"Content-Type": "text/plain; charset=ISO-8859-1"}, body=b"caf\xe9")
    assert latin.text() == "café"
    unknown = Request("POST", "/", headers={"Content-Type": "text/plain; charset=klingon"}, body=b"ok \xff")
    assert unknown.text() == "ok \ufffd"


def test_json_errors_name_line_and_column():
    req = Request("POST", "/", body=b'{\n  "a": 1,\n  "b": }\n')
    with pytest.raises(JsonDecodeError, match=r"line 3, column 8"):
        req.json()
    with pytest.raises(JsonDecodeError, match=r"line 1, column 1"):
        Request("POST", "/").json()


def test_json_is_cached_and_keeps_order():
    req = Request("POST", "/", body=b'{"b": 1, "a": [1, 2.5, null]}')
    data = req.json()
    assert list(data) == ["b", "a"]
    assert req.json() is data


# --- forms and files -------------------------------------------------------------------------------

MULTIPART = (
    b"--xyz\r\n"
    b'Content-Disposition: form-data; name="title"\r\n\r\n'
    b"hello\r\n"
    b"--xyz\r\n"
    b'Content-Disposition: form-data; name="title"\r\n\r\n'
    b"again\r\n"
    b"--xyz\r\n"
    b'Content-Disposition: form-data; name="docs"; filename="A.TXT"\r\n'
    b"Content-Type: text/plain\r\n\r\n"
    b"first\r\n"
    b"--xyz\r\n"
    b'Content-Disposition: form-data; name="docs"; filename="archive.tar.gz"\r\n\r\n'
    b"\x00\xff\r\n"
    b"--xyz\r\n"
    b'Content-Disposition: form-data; name="empty"; filename=""\r\n\r\n'
    b"\r\n"
    b"--xyz--\r\n"
)


def multipart_request():
    return Request("POST", "/", headers={"Content-Type": "multipart/form-data; boundary=xyz"}, body=MULTIPART)


def test_multipart_repeated_fields_and_files(tmp_path):
    req = multipart_request()
    assert req.form() == {"title": "again"}
    assert req.form_list("title") == ["hello", "again"]
    files = req.files()
    assert set(files) == {"docs", "empty"}
    first, second = req.files_list("docs")
    assert files["docs"] is second
    assert (first.name, first.filename, first.content_type, first.size()) == ("docs", "A.TXT", "text/plain", 5)
    assert first.extension() == "txt"
    assert first.read_text() == "first"
    assert first.read() is first.read()
    assert second.extension() == "gz"
    assert second.content_type == "application/octet-stream"
    assert second.read() == b"\x00\xff"
    assert second.read_text(errors="replace") == "\x00\ufffd"
    with pytest.raises(UnicodeDecodeError):
        second.read_text()
    assert files["empty"].filename == "" and files["empty"].size() == 0 and files["empty"].extension() == ""
    target = tmp_path / "out.bin"
    assert second.save(target) == 2
    assert target.read_bytes() == b"\x00\xff"
    assert "archive.tar.gz" in repr(second)


def test_malformed_multipart_is_http_400():
    req = Request("POST", "/", headers={"Content-Type": "multipart/form-data; boundary=xyz"}, body=b"--xyz\r\nbroken")
    with pytest.raises(HTTPException) as info:
        req.form()
    assert info.value.status_code == 400
    no_boundary = Request("POST", "/", headers={"Content-Type": "multipart/form-data"}, body=b"x")
    with pytest.raises(HTTPException):
        no_boundary.files()


def test_form_of_other_bodies_is_empty():
    req = Request("POST", "/", headers={"Content-Type": "application/json"}, body=b"{}")
    assert req.form() == {} and req.files() == {}


def test_urlencoded_repeated_and_bad_encoding():
    req = Request(
        "POST", "/", headers={"Content-Type": "application/x-www-form-urlencoded"}, body=b"a=1&a=2&b=%FF&c=x+y"
    )
    assert req.form() == {"a": "2", "b": "\ufffd", "c": "x y"}
    assert req.form_list("a") == ["1", "2"]


# --- client, forwarded headers, url ----------------------------------------------------------------


def test_client_is_the_socket_peer():
    req = Request("GET", "/", client=("::ffff:192.0.2.1", 4000), headers={"X-Forwarded-For": "203.0.113.9"})
    assert req.client == ("192.0.2.1", 4000)
    assert (req.client.host, req.client.port) == ("192.0.2.1", 4000)
    assert "192.0.2.1" in str(req.client)
    assert req.client_ip() == "192.0.2.1"
    assert Request("GET", "/").client is None
    assert Request("GET", "/").client_ip() is None


FORWARDED = {
    "X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.0.0.5",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "public.example.com",
    "X-Real-IP": "198.51.100.99",
}


def test_forwarded_headers_honoured_only_from_trusted_peer():
    trusted = Request("GET", "/x", headers=FORWARDED, client=("10.0.0.1", 1), trusted_proxies=["10.0.0.0/8"])
    assert trusted.client_ip() == "203.0.113.7"
    assert trusted.scheme == "https" and trusted.is_secure()
    assert trusted.host() == "public.example.com"
    assert trusted.url == "https://public.example.com/x"
    assert trusted.client.host == "10.0.0.1"

    untrusted = Request("GET", "/x", headers=FORWARDED, client=("192.0.2.1", 1), trusted_proxies=["10.0.0.0/8"])
    assert untrusted.client_ip() == "192.0.2.1"
    assert untrusted.scheme == "http" and not untrusted.is_secure()
    assert untrusted.host() == "localhost"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Forwarded": 'for=198.51.100.1;proto=https, for="[2001:db8::1]:4711"'}, "2001:db8::1"),
        ({"Forwarded": "for=unknown"}, "10.0.0.1"),
        ({"X-Real-IP": "198.51.100.99"}, "198.51.100.99"),
        ({"X-Forwarded-For": "not-an-ip, ###"}, "10.0.0.1"),
        ({"X-Forwarded-For": "10.0.0.7, 10.0.0.8"}, "10.0.0.7"),
        ({"X-Forwarded-For": "203.0.113.1:5555"}, "203.0.113.1"),
    ],
)
def test_client_ip_sources(headers, expected):
    req = Request("GET", "/", headers=headers, client=("10.0.0.1", 1), trusted_proxies=["10.0.0.0/8"])
    assert req.client_ip() == expected


def test_host_header_is_validated():
    assert Request("GET", "/p", headers={"Host": "example.com:8080"}).url == "http://example.com:8080/p"
    assert Request("GET", "/p", headers={"Host": "evil.com/x?"}).host() == "localhost"


# --- context, session, request id ------------------------------------------------------------------


def test_context_session_and_request_id():
    req = Request("GET", "/", headers={"X-Request-ID": "abc-123"})
    assert req.context is req.context
    req.set_context("user", 1)
    assert req.get_context("user") == 1 and req.get_context("x", "d") == "d"
    assert req.session is None
    req.session = {"k": "v"}
    assert req.session == {"k": "v"}
    assert req.request_id() == "abc-123"
    generated = Request("GET", "/", headers={"X-Request-ID": "bad id\t"}).request_id()
    assert len(generated) == 36 and generated.count("-") == 4
    other = Request("GET", "/")
    assert other.request_id() == other.request_id()
    assert other.request_id() != Request("GET", "/").request_id()


def test_repr():
    assert repr(Request("GET", "/x?y=1")) == "<Request GET /x?y=1>"


def test_junk_input_never_crashes():
    junk = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
    cookie = b"; ".join(b"k%d=v" % (i % 500) for i in range(5000))
    req = Request(
        "GET",
        "/%FF%FE/%zz?%FF=%FE&a=%&&==&b",
        headers={
            "Cookie": cookie,
            "Accept": junk,
            "Forwarded": junk,
            "X-Forwarded-For": junk,
            "X-Forwarded-Proto": junk,
            "Host": junk,
            "Content-Type": junk,
            "Content-Length": junk,
            "X-Request-ID": junk,
        },
        body=junk,
        client=("10.0.0.1", 1),
        trusted_proxies=["10.0.0.0/8"],
    )
    assert req.path == "/\ufffd\ufffd/%zz"
    assert req.query["\ufffd"] == "\ufffd"
    assert len(req.cookies) == 500
    for fn in (req.accepts, lambda _: req.client_ip(), lambda _: req.url, lambda _: req.content_length):
        fn("text/plain")
    assert req.scheme == "http" and req.host() == "localhost"
    assert len(req.request_id()) == 36
    assert isinstance(req.text(), str)
    assert req.form() == {} and req.files() == {}
    with pytest.raises(JsonDecodeError):
        req.json()
