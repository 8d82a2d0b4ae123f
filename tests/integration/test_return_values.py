"""Issue 2, item 4 (first half): handler return conventions of API.md, over a real socket.

dict/list/int/float/bool/None -> JSON 200; str -> JSON string; bytes -> application/octet-stream;
(body, status) and (body, status, headers); Response; pydantic models and dataclasses -> JSON;
sync and async generators / iterators -> chunked streaming, sent as produced."""

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.timeout(30)

SLOW_GAP = 1.5  # returns_app.SLOW_GAP


@pytest.fixture(scope="module")
def server(serve):
    return serve("returns_app")


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def assert_json(resp, expected, status=200):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].split(";")[0].strip() == "application/json"
    assert json.loads(resp.content) == expected
    return resp


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/dict", {"a": 1, "b": [True, None, "x"]}),
        ("/list", [1, "two", 3.5, None]),
        ("/int", 42),
        ("/float", 2.5),
        ("/bool", True),
        ("/none", None),
    ],
)
def test_plain_values_are_json_200(client, path, expected):
    assert_json(client.get(path), expected)


def test_none_body_is_literal_null(client):
    assert client.get("/none").content.strip() == b"null"


def test_str_is_a_json_string(client):
    assert_json(client.get("/str"), 'hello "world"')


def test_bytes_are_octet_stream(client):
    resp = client.get("/bytes")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.content == b"\x00\x01\xffraw"
    assert resp.headers["content-length"] == "6"


def test_tuple_body_status(client):
    assert_json(client.get("/tuple2"), {"created": True}, status=201)


def test_tuple_body_status_headers(client):
    resp = assert_json(client.get("/tuple3"), {"accepted": True}, status=202)
    assert resp.headers["x-custom"] == "yes"
    assert resp.headers["x-other"] == "2"


def test_tuple_with_str_body(client):
    assert_json(client.get("/tuple-str"), "teapot", status=418)


def test_response_object(client):
    resp = client.get("/response")
    assert resp.status_code == 203
    assert resp.headers["x-from"] == "response"
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.content == b"plain body"


def test_pydantic_model(client):
    assert_json(client.get("/pydantic"), {"name": "cello", "price": 9.5, "tags": ["a", "b"]})


def test_dataclass(client):
    assert_json(client.get("/dataclass"), {"x": 1, "y": 2, "label": "origin"})


def test_async_handler_dict(client):
    assert_json(client.get("/async-dict"), {"async": True})


def test_async_handler_tuple_with_headers(client):
    resp = assert_json(client.get("/async-tuple"), {"async": True}, status=201)
    assert resp.headers["x-async"] == "1"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/gen", b"alpha,beta,gamma"),
        ("/gen-direct", b"one,two"),
        ("/agen", b"alpha,beta,gamma"),
        ("/iterator", b"abc"),
        ("/stream", b"xyz"),
    ],
)
def test_streamed_bodies_are_complete(client, path, expected):
    resp = client.get(path)
    assert resp.status_code == 200
    assert resp.content == expected


@pytest.mark.parametrize("path", ["/gen", "/agen", "/gen-direct", "/stream"])
def test_streams_use_chunked_encoding_on_http11(server, path):
    with server.connect() as conn:
        resp = conn.request("GET", path)
    assert resp.status == 200
    assert "chunked" in (resp.header("transfer-encoding") or "").lower(), resp.headers
    assert resp.header("content-length") is None


def test_response_stream_content_type(client):
    assert client.get("/stream").headers["content-type"].startswith("text/csv")


@pytest.mark.parametrize("path", ["/gen-slow", "/agen-slow"])
def test_stream_chunks_arrive_as_produced(server, path):
    """The generator sleeps SLOW_GAP between chunks: the first must arrive long before the last is made."""
    with httpx.Client(timeout=10) as c:
        start = time.monotonic()
        with c.stream("GET", server.url(path)) as resp:
            assert resp.status_code == 200
            received = b""
            first_at = None
            for piece in resp.iter_raw():
                received += piece
                if first_at is None and b"first" in received:
                    first_at = time.monotonic() - start
        total = time.monotonic() - start
    assert received == b"first\nlast\n"
    assert first_at is not None
    assert first_at < SLOW_GAP * 0.6, f"first chunk arrived after {first_at:.2f} s: the stream was buffered"
    assert total >= SLOW_GAP * 0.9


def test_server_serves_other_requests_after_streams(client):
    assert_json(client.get("/dict"), {"a": 1, "b": [True, None, "x"]})


@pytest.mark.parametrize(("path", "kind"), [("/gen-forever", "sync"), ("/agen-forever", "async")])
def test_endless_stream_stops_when_the_client_goes_away(server, client, path, kind):
    """An endless generator must be closed once its client disconnects, and the worker keeps serving."""
    with server.connect() as conn:
        conn.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = conn.read_head()
        assert head.status == 200
        while conn.buf.count(b"tick") < 3:
            conn._fill()
    # The generator is running (ticks arrived); the client has now gone. A sync generator may hold
    # the Python thread while it runs, so the state is only asked for after the disconnect.
    deadline = time.monotonic() + 5
    while httpx.get(server.url("/stream-state"), timeout=10).json()[kind] != "closed":
        assert time.monotonic() < deadline, f"the {kind} generator kept running 5 s after its client left"
        time.sleep(0.1)
    assert_json(client.get("/dict"), {"a": 1, "b": [True, None, "x"]})


def test_stream_chunks_arrive_as_produced_over_http2(server):
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        start = time.monotonic()
        with c.stream("GET", server.url("/gen-slow")) as resp:
            assert resp.http_version == "HTTP/2"
            received = b""
            first_at = None
            for piece in resp.iter_raw():
                received += piece
                if first_at is None and b"first" in received:
                    first_at = time.monotonic() - start
    assert received == b"first\nlast\n"
    assert first_at is not None and first_at < SLOW_GAP * 0.6, f"first HTTP/2 chunk after {first_at} s"


def test_head_on_a_streaming_route(server):
    with server.connect() as conn:
        resp = conn.request("HEAD", "/gen")
        assert resp.status == 200
        assert conn.request("GET", "/int").json() == 42


def test_tuple_status_may_be_an_httpstatus(client):
    assert_json(client.get("/tuple-httpstatus"), {"created": True}, status=201)


def test_empty_generator_is_an_empty_200(client):
    resp = client.get("/gen-empty")
    assert resp.status_code == 200
    assert resp.content == b""
