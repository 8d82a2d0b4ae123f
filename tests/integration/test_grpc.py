"""Issue 17 (gRPC half): services from Python served by tonic, black-box against a real server
process (tests/apps/grpc_app.py) with the official `grpcio` client: stubs generated from the
app's `.proto` by grpcio-tools, every call kind, errors, deadlines, metadata, the health and
reflection services (grpcio-health-checking, grpcio-reflection) and gRPC-Web over HTTP/1.1."""

from __future__ import annotations

import importlib
import json
import struct
import sys
import time

import httpx
import pytest
from conftest import APPS_DIR, free_port, wait_for_port

grpc = pytest.importorskip("grpc")
grpc_tools = pytest.importorskip("grpc_tools")
from grpc_tools import protoc  # noqa: E402

pytestmark = pytest.mark.timeout(120)

PROTO_DIR = APPS_DIR / "protos"


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """`greeter_pb2` and `greeter_pb2_grpc`, generated from the app's `.proto`."""
    out = tmp_path_factory.mktemp("grpc-stubs")
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "greeter.proto"),
        ]
    )
    assert rc == 0
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("greeter_pb2"), importlib.import_module("greeter_pb2_grpc")
    finally:
        sys.path.remove(str(out))


def start(serve, **env):
    port = free_port()
    server = serve("grpc_app", env={"GRPC_PORT": str(port), **env})
    server.grpc_port = int(server.env["GRPC_PORT"])
    wait_for_port("127.0.0.1", server.grpc_port, 20.0, server.proc)
    return server


@pytest.fixture(scope="module")
def server(serve):
    return start(serve)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(pb, channel):
    return pb[1].GreeterStub(channel)


def events(pb, stub) -> list[str]:
    return list(stub.Events(pb[0].Empty(), timeout=5).events)


def wait_for_event(pb, stub, text: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = events(pb, stub)
        if text in seen:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen within {timeout} s: {seen}")


# ---- unary with a .proto --------------------------------------------------------------------


def test_unary_with_every_field_kind(pb, stub):
    req = pb[0].HelloRequest(
        name="Ada", tags=["a", "b"], scores={"x": 1, "y": -2}, blob=b"\x00\xff", mood=pb[0].HAPPY, big=2**40
    )
    reply = stub.SayHello(req, timeout=5)
    assert reply.message == "Hello, Ada!"
    assert list(reply.tags) == ["a", "b"]
    assert dict(reply.scores) == {"x": 1, "y": -2}
    assert reply.blob == b"\x00\xff"
    assert reply.mood == pb[0].HAPPY
    assert reply.big == 2**40


def test_defaults_round_trip(pb, stub):
    reply = stub.SayHello(pb[0].HelloRequest(), timeout=5)
    assert reply.message == "Hello, !"
    assert reply.mood == pb[0].NEUTRAL


def test_unimplemented_rpc_and_unknown_method(pb, stub, channel):
    with pytest.raises(grpc.RpcError) as err:
        stub.NotImplementedHere(pb[0].Empty(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    call = channel.unary_unary("/cello.test.Greeter/Nope")
    with pytest.raises(grpc.RpcError) as err:
        call(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


# ---- errors, deadlines, metadata ------------------------------------------------------------


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK], ids=lambda c: c.name)
def test_grpc_error_codes_message_details_and_trailers(pb, stub, code):
    number = code.value[0]
    with pytest.raises(grpc.RpcError) as err:
        stub.Fail(pb[0].FailRequest(code=number, message=f"failed with {code.name}"), timeout=5)
    assert err.value.code() == code
    assert err.value.details() == f"failed with {code.name}"
    trailers = dict(err.value.trailing_metadata())
    assert trailers["why"] == "asked"
    assert trailers["grpc-status-details-bin"] == b"\x08\x05"


def test_deadline_cancels_the_handler(pb, stub):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub.Slow(pb[0].SlowRequest(seconds=30, tag="deadline"), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    seen = wait_for_event(pb, stub, "cancelled:deadline")
    assert "done:deadline" not in seen


def test_client_cancel_cancels_the_handler(pb, stub):
    future = stub.Slow.future(pb[0].SlowRequest(seconds=30, tag="cancel"))
    time.sleep(0.3)
    future.cancel()
    wait_for_event(pb, stub, "cancelled:cancel")


def test_metadata_in_and_out(pb, stub):
    reply, call = stub.Echo.with_call(
        pb[0].HelloRequest(name="meta"),
        metadata=[("x-token", "abc"), ("x-data-bin", b"\x00\x01\x02")],
        timeout=5,
    )
    assert reply.message == "meta"
    assert reply.blob == b"\x00\x01\x02"
    assert dict(call.initial_metadata())["x-echo"] == "abc"
    trailers = dict(call.trailing_metadata())
    assert trailers["x-trailer"] == "bye"
    assert trailers["x-extra-bin"] == b"\x01\x02"


def test_max_message_size(pb, stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.SayHello(pb[0].HelloRequest(blob=b"x" * (2 * 1024 * 1024)), timeout=5)
    # gRPC's code for a message over the limit (the limit is named in the details).
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1048576" in err.value.details()
    # A request just within the limit whose answer is over it: the same code, from the server.
    with pytest.raises(grpc.RpcError) as err:
        stub.SayHello(pb[0].HelloRequest(blob=b"x" * (1024 * 1024 - 4)), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "response message" in err.value.details()
    # The server is fine afterwards.
    assert stub.SayHello(pb[0].HelloRequest(name="ok"), timeout=5).message == "Hello, ok!"


def test_concurrency_limit_queues_calls(pb, serve):
    limited = start(serve, GRPC_CONCURRENCY="2")
    with grpc.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as ch:
        s = pb[1].GreeterStub(ch)
        started = time.monotonic()
        futures = [s.Slow.future(pb[0].SlowRequest(seconds=0.5, tag=f"limit{i}"), timeout=20) for i in range(4)]
        assert all(f.result().message == "done" for f in futures)
        # Two at a time: the last two waited for a place.
        assert time.monotonic() - started >= 0.95


# ---- streaming --------------------------------------------------------------------------------


def test_server_streaming(pb, stub):
    assert [c.n for c in stub.CountTo(pb[0].CountRequest(to=5), timeout=5)] == [1, 2, 3, 4, 5]
    assert list(stub.CountTo(pb[0].CountRequest(to=0), timeout=5)) == []


def test_client_streaming(pb, stub):
    total = stub.Sum(iter([pb[0].Count(n=i) for i in range(1, 5)]), timeout=5)
    assert (total.sum, total.count) == (10, 4)
    assert stub.Sum(iter([]), timeout=5).count == 0


def test_bidirectional_streaming(pb, stub):
    names = [f"n{i}" for i in range(50)]
    replies = stub.Chat(iter([pb[0].HelloRequest(name=n) for n in names]), timeout=10)
    assert [r.message for r in replies] == [f"echo {n}" for n in names]


def test_long_server_stream_with_back_pressure(pb, stub):
    assert sum(1 for _ in stub.CountTo(pb[0].CountRequest(to=5000), timeout=30)) == 5000


# ---- without a .proto: JSON ---------------------------------------------------------------------


def json_call(channel, path, kind="unary_unary"):
    return getattr(channel, kind)(
        path, request_serializer=lambda v: json.dumps(v).encode(), response_deserializer=json.loads
    )


def test_dict_style_service_over_json(channel):
    assert json_call(channel, "/cello.test.Plain/Upper")({"text": "abc"}, timeout=5) == {"text": "ABC"}
    letters = json_call(channel, "/cello.test.Plain/Letters", "unary_stream")({"text": "hey"}, timeout=5)
    assert [m["letter"] for m in letters] == ["h", "e", "y"]


def test_published_name_and_methods_form(channel):
    assert json_call(channel, "/cello.test.Published/Ping")({"n": 41}, timeout=5) == {"pong": 42}


def test_bad_json_is_invalid_argument(channel):
    call = channel.unary_unary("/cello.test.Plain/Upper")
    with pytest.raises(grpc.RpcError) as err:
        call(b"{not json", timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---- health, reflection, gRPC-Web -----------------------------------------------------------------


def test_health_service(channel):
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    from grpc_health.v1 import health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for name in ["", "cello.test.Greeter", "cello.test.Plain"]:
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="nope.Nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services_and_methods(channel):
    pytest.importorskip("grpc_reflection")
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert "cello.test.Greeter" in services
    pool = DescriptorPool(db)
    greeter = pool.FindServiceByName("cello.test.Greeter")
    assert {m.name for m in greeter.methods} >= {"SayHello", "CountTo", "Sum", "Chat"}
    assert greeter.methods_by_name["CountTo"].server_streaming


def test_grpc_web_over_http1(pb, server):
    body = pb[0].HelloRequest(name="web").SerializeToString()
    frame = b"\x00" + struct.pack(">I", len(body)) + body
    with httpx.Client(http1=True, http2=False) as client:
        r = client.post(
            f"http://127.0.0.1:{server.grpc_port}/cello.test.Greeter/SayHello",
            content=frame,
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
            timeout=5,
        )
    assert r.status_code == 200
    assert r.http_version == "HTTP/1.1"
    assert r.headers["content-type"].startswith("application/grpc-web")
    data = r.content
    assert data[0] == 0
    n = struct.unpack(">I", data[1:5])[0]
    assert pb[0].HelloReply.FromString(data[5 : 5 + n]).message == "Hello, web!"
    trailer = data[5 + n :]
    assert trailer[0] == 0x80
    assert b"grpc-status:0" in trailer[5:].replace(b" ", b"")


def test_http_port_still_serves_http(server):
    assert httpx.get(server.url("/"), timeout=5).json() == {"ok": True}


def test_grpc_on_the_http_port_by_content_type(pb, server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        s = pb[1].GreeterStub(ch)
        assert s.SayHello(pb[0].HelloRequest(name="port"), timeout=5).message == "Hello, port!"
        assert [c.n for c in s.CountTo(pb[0].CountRequest(to=3), timeout=5)] == [1, 2, 3]
    # The HTTP routes are unaffected.
    assert httpx.get(server.url("/"), timeout=5).json() == {"ok": True}


def test_grpc_errors_on_the_http_port(pb, server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb[1].GreeterStub(ch).Fail(pb[0].FailRequest(code=7, message="no"), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


# ---- gRPC-Web CORS ------------------------------------------------------------------------------

GRPC_WEB_HEADERS = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
EXPOSED = {"grpc-status", "grpc-message", "grpc-status-details-bin"}


def tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",") if t.strip()}


def web_frame(pb, name: str) -> bytes:
    body = pb[0].HelloRequest(name=name).SerializeToString()
    return b"\x00" + struct.pack(">I", len(body)) + body


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,x-user-agent,grpc-timeout",
        },
        timeout=5,
    )


def test_grpc_web_cors_without_app_cors_allows_any_origin(pb, server):
    """No `enable_cors`: the gRPC listener answers gRPC-Web CORS as tonic-web recommends
    (any origin, no credentials, gRPC's headers exposed)."""
    url = f"http://127.0.0.1:{server.grpc_port}/cello.test.Greeter/SayHello"
    r = preflight(url, "https://web.example")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert {"content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"} <= tokens(
        r.headers["access-control-allow-headers"]
    )
    assert "access-control-allow-credentials" not in r.headers
    r = httpx.post(url, content=web_frame(pb, "cors"), headers={**GRPC_WEB_HEADERS, "origin": "https://web.example"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert tokens(r.headers["access-control-expose-headers"]) >= EXPOSED
    assert b"Hello, cors!" in r.content
    # Without an Origin (not a browser) nothing changes.
    r = httpx.post(url, content=web_frame(pb, "plain"), headers=GRPC_WEB_HEADERS)
    assert "access-control-allow-origin" not in r.headers


@pytest.fixture(scope="module")
def cors_server(serve):
    return start(serve, GRPC_CORS="https://app.example")


@pytest.mark.parametrize("port_of", ["grpc_port", "port"], ids=["grpc-listener", "http-port"])
def test_grpc_web_cors_follows_the_apps_cors(pb, cors_server, port_of):
    """With `enable_cors(origins=[...], credentials=True, ...)`, gRPC-Web on the gRPC listener
    and on the HTTP port answers CORS by the app's settings, gRPC's headers exposed."""
    url = f"http://127.0.0.1:{getattr(cors_server, port_of)}/cello.test.Greeter/SayHello"
    origin = "https://app.example"
    r = preflight(url, origin)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == origin
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-max-age"] == "600"
    assert {"content-type", "x-grpc-web"} <= tokens(r.headers["access-control-allow-headers"])
    r = httpx.post(url, content=web_frame(pb, "app"), headers={**GRPC_WEB_HEADERS, "origin": origin}, timeout=5)
    assert r.status_code == 200 and b"Hello, app!" in r.content
    assert r.headers["access-control-allow-origin"] == origin
    assert EXPOSED | {"x-custom"} <= tokens(r.headers["access-control-expose-headers"])
    # Another origin: no CORS headers (the browser refuses to read the answer).
    other = preflight(url, "https://evil.example")
    assert "access-control-allow-origin" not in other.headers
    r = httpx.post(url, content=web_frame(pb, "x"), headers={**GRPC_WEB_HEADERS, "origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


# ---- compression ----------------------------------------------------------------------------------


def test_gzip_requests_and_responses_with_grpcio(pb, server):
    big = "x" * 50_000
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", compression=grpc.Compression.Gzip) as ch:
        s = pb[1].GreeterStub(ch)
        assert s.SayHello(pb[0].HelloRequest(name=big), timeout=5).message == f"Hello, {big}!"
        assert [c.n for c in s.CountTo(pb[0].CountRequest(to=3), timeout=5)] == [1, 2, 3]
        total = s.Sum(iter([pb[0].Count(n=i) for i in range(10)]), timeout=5)
        assert total.sum == 45
    # Per call, on an uncompressed channel.
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        reply = (
            pb[1].GreeterStub(ch).SayHello(pb[0].HelloRequest(name="z"), compression=grpc.Compression.Gzip, timeout=5)
        )
        assert reply.message == "Hello, z!"


def h2_call(port: int, frame: bytes, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(http1=False, http2=True) as client:
        r = client.post(
            f"http://127.0.0.1:{port}/cello.test.Greeter/SayHello",
            content=frame,
            headers={"content-type": "application/grpc", "te": "trailers", **headers},
            timeout=5,
        )
    assert r.http_version == "HTTP/2"
    return r


def test_gzip_on_the_wire(pb, server):
    """What grpcio does not show: a gzip request gets a gzip response when the client accepts
    gzip; an uncompressed request, or a client that does not accept gzip, a plain one."""
    import gzip

    name = "y" * 1000
    body = pb[0].HelloRequest(name=name).SerializeToString()
    packed = gzip.compress(body)
    gz_frame = b"\x01" + struct.pack(">I", len(packed)) + packed
    plain_frame = b"\x00" + struct.pack(">I", len(body)) + body

    def message(data: bytes) -> str:
        n = struct.unpack(">I", data[1:5])[0]
        payload = data[5 : 5 + n]
        return pb[0].HelloReply.FromString(gzip.decompress(payload) if data[0] == 1 else payload).message

    r = h2_call(server.grpc_port, gz_frame, {"grpc-encoding": "gzip", "grpc-accept-encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["grpc-encoding"] == "gzip"
    assert r.content[0] == 1  # the compressed flag
    assert message(r.content) == f"Hello, {name}!"
    r = h2_call(server.grpc_port, plain_frame, {"grpc-accept-encoding": "gzip"})
    assert "grpc-encoding" not in r.headers and r.content[0] == 0
    assert message(r.content) == f"Hello, {name}!"
    r = h2_call(server.grpc_port, gz_frame, {"grpc-encoding": "gzip", "grpc-accept-encoding": "identity"})
    assert r.content[0] == 0
    assert message(r.content) == f"Hello, {name}!"


# ---- GrpcChannel ---------------------------------------------------------------------------------


def test_grpc_channel_calls(server):
    import asyncio

    from cello.grpc import GrpcChannel, GrpcError, StatusCode

    async def go():
        target = f"127.0.0.1:{server.grpc_port}"
        ch = await GrpcChannel.connect(target, proto=PROTO_DIR / "greeter.proto")
        reply = await ch.call("cello.test.Greeter", "SayHello", {"name": "chan", "tags": ["t"]})
        assert reply["message"] == "Hello, chan!" and reply["tags"] == ["t"]
        with pytest.raises(GrpcError) as err:
            await ch.call("cello.test.Greeter", "Fail", {"code": 5, "message": "gone"})
        assert err.value.code == StatusCode.NOT_FOUND and err.value.message == "gone"
        with pytest.raises(GrpcError) as err:
            await ch.call("cello.test.Greeter", "Slow", {"seconds": 30, "tag": "chan"}, timeout=0.3)
        assert err.value.code == StatusCode.DEADLINE_EXCEEDED
        plain = await GrpcChannel.connect(target)
        assert await plain.call("cello.test.Plain", "Upper", {"text": "abc"}) == {"text": "ABC"}
        with pytest.raises(GrpcError) as err:
            await (await GrpcChannel.connect(f"127.0.0.1:{free_port()}")).call("cello.test.Plain", "Upper", {})
        # tonic's client reports a refused connection as UNKNOWN "client error (Connect)".
        assert "Connect" in err.value.message

    asyncio.run(go())


def test_grpc_channel_streaming_calls(server):
    import asyncio

    from cello.grpc import GrpcChannel, GrpcError, StatusCode

    async def go():
        target = f"127.0.0.1:{server.grpc_port}"
        ch = await GrpcChannel.connect(target, proto=PROTO_DIR / "greeter.proto")
        # Server streaming, a long one too (back-pressure on the client side).
        assert [m["n"] async for m in ch.server_stream("cello.test.Greeter", "CountTo", {"to": 5})] == [1, 2, 3, 4, 5]
        assert [m async for m in ch.server_stream("cello.test.Greeter", "CountTo", {"to": 0})] == []
        n = 0
        async for _ in ch.server_stream("cello.test.Greeter", "CountTo", {"to": 3000}):
            n += 1
        assert n == 3000

        # Client streaming from a list and from an async generator.
        total = await ch.client_stream("cello.test.Greeter", "Sum", [{"n": i} for i in range(1, 5)])
        assert (total["sum"], total["count"]) == (10, 4)

        async def numbers():
            for i in range(100):
                await asyncio.sleep(0)
                yield {"n": i}

        total = await ch.client_stream("cello.test.Greeter", "Sum", numbers())
        assert (total["sum"], total["count"]) == (4950, 100)
        assert (await ch.client_stream("cello.test.Greeter", "Sum", []))["count"] == 0

        # Bidirectional, interleaved: each reply arrives before the next request is sent.
        async with ch.bidi_stream("cello.test.Greeter", "Chat") as chat:
            for name in ["a", "b", "c"]:
                await chat.write({"name": name})
                assert (await asyncio.wait_for(chat.read(), 5))["message"] == f"echo {name}"
            await chat.done_writing()
            assert await chat.read() is None
        # ... and from an iterable of requests.
        replies = [
            m["message"]
            async for m in ch.bidi_stream("cello.test.Greeter", "Chat", ({"name": str(i)} for i in range(20)))
        ]
        assert replies == [f"echo {i}" for i in range(20)]

        # A deadline ends a stream with DEADLINE_EXCEEDED.
        with pytest.raises(GrpcError) as err:
            async for _ in ch.bidi_stream("cello.test.Greeter", "Chat", timeout=0.3):
                pass
        assert err.value.code == StatusCode.DEADLINE_EXCEEDED
        # The kind is checked against the .proto.
        with pytest.raises(ValueError, match="server-stream rpc"):
            await ch.call("cello.test.Greeter", "CountTo", {"to": 1})
        with pytest.raises(ValueError, match="unary rpc"):
            ch.server_stream("cello.test.Greeter", "SayHello", {})

        # Without a .proto (JSON): a server stream, and an error status from a stream.
        plain = await GrpcChannel.connect(target)
        letters = [m["letter"] async for m in plain.server_stream("cello.test.Plain", "Letters", {"text": "abc"})]
        assert letters == ["a", "b", "c"]
        with pytest.raises(GrpcError) as err:
            async for _ in plain.server_stream("cello.test.Plain", "Nope", {}):
                pass
        assert err.value.code == StatusCode.UNIMPLEMENTED

    asyncio.run(go())


# ---- the example app --------------------------------------------------------------------------


def test_example_app_from_its_proto(serve, tmp_path):
    proto_dir = APPS_DIR.parent.parent / "examples" / "grpc"
    assert (
        protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={tmp_path}", str(proto_dir / "inventory.proto")]) == 0
    )
    sys.path.insert(0, str(tmp_path))
    try:
        inv = importlib.import_module("inventory_pb2")
    finally:
        sys.path.remove(str(tmp_path))
    port = free_port()
    server = serve("grpc_example", env={"GRPC_ADDRESS": f"127.0.0.1:{port}"})
    wait_for_port("127.0.0.1", port, 20.0, server.proc)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        get = ch.unary_unary(
            "/inventory.v1.Inventory/GetItem",
            request_serializer=inv.GetItemRequest.SerializeToString,
            response_deserializer=inv.Item.FromString,
        )
        assert get(inv.GetItemRequest(sku="A-1"), timeout=5).name == "anchor"
        with pytest.raises(grpc.RpcError) as err:
            get(inv.GetItemRequest(sku="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        low = ch.unary_stream(
            "/inventory.v1.Inventory/ListLowStock",
            request_serializer=inv.LowStockRequest.SerializeToString,
            response_deserializer=inv.Item.FromString,
        )
        assert sorted(i.sku for i in low(inv.LowStockRequest(below=5), timeout=5)) == ["A-1", "C-3"]
        restock = ch.stream_unary(
            "/inventory.v1.Inventory/Restock",
            request_serializer=inv.RestockRequest.SerializeToString,
            response_deserializer=inv.RestockSummary.FromString,
        )
        summary = restock(iter([inv.RestockRequest(sku="A-1", quantity=2), inv.RestockRequest(sku="C-3", quantity=5)]))
        assert (summary.items, summary.units) == (2, 7)
