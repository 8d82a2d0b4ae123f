"""Issue 4, item 3: OpenTelemetry tracing over the real server, exported over OTLP gRPC and
HTTP/protobuf to a real receiver: one server span per request named `{METHOD} {route}` with HTTP
semantic-convention attributes, W3C traceparent in and out, Python spans as children, sampling,
excluded paths, and a dead collector that never slows requests."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from obs_helpers import wait_until
from otlp_receiver import GrpcReceiver, HttpReceiver

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import free_port

pytestmark = pytest.mark.timeout(60)
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
SERVER = 2  # SpanKind.SPAN_KIND_SERVER in OTLP
INTERNAL = 1


@pytest.fixture(params=["grpc", "http/protobuf"])
def traced(request, serve):
    receiver = GrpcReceiver() if request.param == "grpc" else HttpReceiver()
    env = {"OBS_OTLP_ENDPOINT": receiver.endpoint, "OBS_OTLP_PROTOCOL": request.param, "OBS_PROPAGATE": "1",
           **FAST_EXPORT}  # fmt: skip
    server = serve("obs_app", env=env, fresh=True)
    yield server, receiver
    server.stop()
    receiver.stop()


def test_server_span_per_request_with_semconv_attributes_and_w3c_propagation(traced):
    server, receiver = traced
    resp = httpx.get(server.url("/users/42?x=1"), headers={
        "traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01", "tracestate": "vendor=abc", "user-agent": "obs-test/1"},
        timeout=5)  # fmt: skip
    assert resp.status_code == 200
    # The response carries the server span's context (propagate_response=True).
    version, trace_id, span_id, flags = resp.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", PARENT_TRACE, "01")
    assert resp.headers["tracestate"] == "vendor=abc"

    span = receiver.wait_for(lambda s: s["name"] == "GET /users/{id:int}")[0]
    assert span["kind"] == SERVER
    assert span["trace_id"] == PARENT_TRACE and span["parent_span_id"] == PARENT_SPAN
    assert span["span_id"] == span_id
    a = span["attributes"]
    assert a["http.request.method"] == "GET"
    assert a["http.route"] == "/users/{id:int}"
    assert a["http.response.status_code"] == 200
    assert a["url.path"] == "/users/42" and a["url.query"] == "x=1" and a["url.scheme"] == "http"
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == server.port
    assert a["network.protocol.version"] == "1.1"
    assert a["client.address"] == "127.0.0.1"
    assert a["user_agent.original"] == "obs-test/1"
    assert span["resource"]["service.name"] == "obs-test"
    assert span["resource"]["service.version"] == "9.9.9"
    assert span["end"] >= span["start"] > 0


def test_errors_unknown_routes_and_new_traces(traced):
    server, receiver = traced
    assert httpx.get(server.url("/boom"), timeout=5).status_code == 500
    assert httpx.get(server.url("/no/such/path"), timeout=5).status_code == 404
    boom = receiver.wait_for(lambda s: s["name"] == "GET /boom")[0]
    assert boom["status"] == 2 and boom["attributes"]["error.type"] == "500"  # STATUS_CODE_ERROR
    assert boom["parent_span_id"] == ""  # a new trace: no parent
    missing = receiver.wait_for(lambda s: s["name"] == "GET")[0]
    assert "http.route" not in missing["attributes"]
    assert missing["attributes"]["http.response.status_code"] == 404


def test_python_spans_are_children_of_the_server_span(traced):
    server, receiver = traced
    resp = httpx.get(server.url("/span"), headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}, timeout=5)
    assert resp.status_code == 200
    server_span = receiver.wait_for(lambda s: s["name"] == "GET /span")[0]
    query = receiver.wait_for(lambda s: s["name"] == "db.query")[0]
    inner = receiver.wait_for(lambda s: s["name"] == "inner")[0]
    assert query["trace_id"] == inner["trace_id"] == PARENT_TRACE
    assert query["parent_span_id"] == server_span["span_id"]
    assert inner["parent_span_id"] == query["span_id"]
    assert query["kind"] == INTERNAL and query["scope"] == "obs.handler"
    assert query["attributes"] == {"db.system": "postgresql", "rows": 3}
    assert query["events"] == ["fetched"]
    assert query["resource"]["service.name"] == "obs-test"


def test_excluded_paths_get_no_span(traced):
    server, receiver = traced
    assert httpx.get(server.url("/excluded/x"), timeout=5).status_code == 200
    assert httpx.get(server.url("/users/7"), timeout=5).status_code == 200
    receiver.wait_for(lambda s: s["attributes"].get("url.path") == "/users/7")
    time.sleep(0.3)
    assert not [s for s in receiver.spans if s["attributes"].get("url.path") == "/excluded/x"]


def test_http_exporter_posts_to_v1_traces(serve):
    receiver = HttpReceiver()
    try:
        server = serve("obs_app", env={"OBS_OTLP_ENDPOINT": receiver.endpoint, "OBS_OTLP_PROTOCOL": "http/protobuf",
                                       **FAST_EXPORT}, fresh=True)  # fmt: skip
        httpx.get(server.url("/users/1"), timeout=5)
        receiver.wait_for(lambda s: True)
        assert receiver.paths[0] == ("/v1/traces", "application/x-protobuf")
        server.stop()
    finally:
        receiver.stop()


def test_sampling_rate_zero_exports_nothing_but_still_propagates(serve):
    receiver = GrpcReceiver()
    try:
        env = {"OBS_OTLP_ENDPOINT": receiver.endpoint, "OBS_SAMPLING": "0", "OBS_PROPAGATE": "1", **FAST_EXPORT}
        server = serve("obs_app", env=env, fresh=True)
        resp = httpx.get(server.url("/users/1"), timeout=5)
        assert resp.headers["traceparent"].endswith("-00")  # not sampled
        # A sampled parent is honoured (parent-based sampling).
        httpx.get(server.url("/users/2"), headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}, timeout=5)
        spans = receiver.wait_for(lambda s: s["name"] == "GET /users/{id:int}")
        time.sleep(0.5)
        assert [s["attributes"]["url.path"] for s in receiver.spans] == ["/users/2"], spans
        server.stop()
    finally:
        receiver.stop()


def _blackhole():
    """A port that accepts TCP connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    return s


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_dead_or_stuck_collector_never_slows_requests(serve, protocol):
    hole = _blackhole()
    try:
        env = {"OBS_OTLP_ENDPOINT": f"http://127.0.0.1:{hole.getsockname()[1]}", "OBS_OTLP_PROTOCOL": protocol,
               "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_BSP_MAX_QUEUE_SIZE": "64"}  # fmt: skip
        server = serve("obs_app", env=env, fresh=True)
        with httpx.Client(base_url=server.base_url, timeout=5) as c:
            c.get("/users/0")
            started = time.monotonic()
            for i in range(500):
                assert c.get(f"/users/{i}").status_code == 200
            elapsed = time.monotonic() - started
        assert elapsed < 5, f"500 requests took {elapsed:.2f} s with a stuck collector"
        stopped = time.monotonic()
        server.stop(timeout=15)
        assert time.monotonic() - stopped < 12  # the final flush is bounded
    finally:
        hole.close()


def test_otel_env_variables_configure_the_exporter(tmp_path):
    """With no endpoint in the config, the standard OTEL_* variables are used."""
    receiver = HttpReceiver()
    app = tmp_path / "env_app.py"
    app.write_text(
        "from cello import App\napp = App()\napp.enable_telemetry()\n@app.get('/a/{x}')\ndef a(request, x):\n"
        "    return x\nif __name__ == '__main__':\n    app.run()\n"
    )
    port = free_port()
    env = dict(os.environ, **FAST_EXPORT)
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    env.update(OTEL_SERVICE_NAME="from-env", OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test")
    proc = subprocess.Popen([sys.executable, str(app), "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/a/1"), what="server up")
        span = receiver.wait_for(lambda s: s["name"] == "GET /a/{x}")[0]
        assert span["resource"]["service.name"] == "from-env"
        assert span["resource"]["deployment.environment"] == "test"
    finally:
        proc.terminate()
        proc.wait(10)
        receiver.stop()


def _get(url):
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False
