"""Issue 4, item 5: one structured log setup. With JSON logs every line is a JSON object; access
log lines and the handler's own records carry the trace_id and span_id of the request's span;
the data plane's Rust log events arrive through Python logging."""

import json
import logging

import httpx
import pytest
from obs_helpers import wait_until
from otlp_receiver import GrpcReceiver

pytestmark = pytest.mark.timeout(60)
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_json_logs_carry_trace_and_span_ids(serve):
    receiver = GrpcReceiver()
    try:
        env = {"OBS_OTLP_ENDPOINT": receiver.endpoint, "OBS_LOG_FORMAT": "json", "OTEL_BSP_SCHEDULE_DELAY": "100"}
        server = serve("obs_app", "--access-log", env=env, fresh=True)
        resp = httpx.get(server.url("/log"), headers={"traceparent": f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"},
                         timeout=5)  # fmt: skip
        assert resp.status_code == 200
        httpx.get(server.url("/span"), timeout=5)
        server_span = receiver.wait_for(lambda s: s["name"] == "GET /log")[0]

        def records():
            return json_lines(server.log())

        handler = wait_until(lambda: [r for r in records() if r.get("message") == "hello from the handler"],
                             what="handler record")[0]  # fmt: skip
        assert handler["logger"] == "obs.handler" and handler["level"] == "WARNING"
        assert handler["trace_id"] == PARENT_TRACE
        assert handler["span_id"] == server_span["span_id"]
        access = wait_until(
            lambda: [r for r in records() if r.get("logger") == "cello.access" and r.get("path") == "/log"],
            what="access record",
        )[0]
        assert access["trace_id"] == PARENT_TRACE and access["span_id"] == server_span["span_id"]
        assert access["status"] == 200 and access["method"] == "GET" and "duration_ms" in access
        # Inside a Python span, records carry that span's id.
        inner = receiver.wait_for(lambda s: s["name"] == "inner")[0]
        rec = wait_until(lambda: [r for r in records() if r.get("message") == "inside a python span"], what="rec")[0]
        assert (rec["trace_id"], rec["span_id"]) == (inner["trace_id"], inner["span_id"])
        assert all("timestamp" in r and "level" in r for r in records())
    finally:
        receiver.stop()


def test_access_log_without_tracing_has_no_ids(serve):
    server = serve("obs_app", "--access-log", env={"OBS_LOG_FORMAT": "json"}, fresh=True)
    httpx.get(server.url("/users/3"), timeout=5)
    access = wait_until(
        lambda: [r for r in json_lines(server.log()) if r.get("logger") == "cello.access"], what="access record"
    )[0]
    assert access["path"] == "/users/3" and "trace_id" not in access


def test_json_formatter_and_filter_in_process():
    from cello.observability import JsonFormatter, TraceContextFilter

    record = logging.LogRecord("app", logging.ERROR, __file__, 1, "failed %s", ("x",), None)
    record.order_id = 7
    assert TraceContextFilter().filter(record)
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "failed x" and out["level"] == "ERROR" and out["order_id"] == 7
    assert "trace_id" not in out

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        record = logging.LogRecord("app", logging.INFO, __file__, 1, "in span", (), None)
        TraceContextFilter().filter(record)
        out = json.loads(JsonFormatter().format(record))
        ctx = span.get_span_context()
        assert out["trace_id"] == format(ctx.trace_id, "032x") and out["span_id"] == format(ctx.span_id, "016x")
    assert trace.get_current_span().get_span_context().is_valid is False


def test_rust_log_events_reach_python_logging():
    """An exporter that cannot be built is reported by the data plane through Python logging."""
    from cello import App
    from cello.config import OpenTelemetryConfig
    from cello.observability import _install_rust_bridge, _pump_rust_logs
    from cello.testing import TestClient

    _install_rust_bridge(logging.DEBUG)
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    app = App()
    app.enable_telemetry(OpenTelemetryConfig(service_name="x", otlp_endpoint="not a url"))

    @app.get("/")
    def index(request):
        return "ok"

    handler = Collect()
    logging.getLogger("cello").addHandler(handler)
    try:
        with TestClient(app) as client:
            assert client.get("/").status_code == 200
        _pump_rust_logs()
    finally:
        logging.getLogger("cello").removeHandler(handler)
    errors = [r for r in records if r.name == "cello.error" and "OTLP exporter" in r.getMessage()]
    assert errors, [r.getMessage() for r in records]
    assert errors[0].levelno == logging.ERROR and errors[0].rust_target.startswith("cello_server")
