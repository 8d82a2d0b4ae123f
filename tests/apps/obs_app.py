"""Observability test app: Prometheus, health probes, OpenTelemetry and JSON logs.

Environment knobs (all optional):
- OBS_OTLP_ENDPOINT / OBS_OTLP_PROTOCOL: enable tracing to that collector.
- OBS_PROPAGATE=1: add traceparent to responses.  OBS_SAMPLING: sampling rate.
- OBS_HEALTH_FILE: the "db" check is healthy while this file holds "ok".
- OBS_DRAIN_DELAY: seconds /health/ready answers 503 before the listener closes.
- OBS_LOG_FORMAT: json|text log format (set up in a startup hook).
- OBS_CACHE_SECS: readiness cache.
- OBS_REQUEST_ID=1: enable_request_id() (the id becomes a span attribute).
"""

import asyncio
import logging
import os
import time

from cello import App
from cello.config import HealthCheckConfig, OpenTelemetryConfig

app = App()
app.enable_prometheus()
app.enable_health_checks(
    HealthCheckConfig(
        include_details=True, timeout_secs=1, cache_secs=float(os.environ.get("OBS_CACHE_SECS", "0")) or None
    ),
    drain_delay_secs=float(os.environ.get("OBS_DRAIN_DELAY", "0")),
)
if os.environ.get("OBS_OTLP_ENDPOINT"):
    app.enable_telemetry(
        OpenTelemetryConfig(
            service_name="obs-test",
            service_version="9.9.9",
            otlp_endpoint=os.environ["OBS_OTLP_ENDPOINT"],
            sampling_rate=float(os.environ.get("OBS_SAMPLING", "1")),
            excluded_paths=["/excluded*"],
        ),
        protocol=os.environ.get("OBS_OTLP_PROTOCOL", "grpc"),
        propagate_response=os.environ.get("OBS_PROPAGATE") == "1",
    )

if os.environ.get("OBS_REQUEST_ID") == "1":
    app.enable_request_id()

handler_log = logging.getLogger("obs.handler")
check_calls = {"db": 0}


@app.on_event("startup")
def logs():
    fmt = os.environ.get("OBS_LOG_FORMAT")
    if fmt:
        from cello.observability import setup_logging

        setup_logging(fmt)
        logging.getLogger("obs").setLevel(logging.INFO)


@app.health_check("db")
def db_check():
    check_calls["db"] += 1
    path = os.environ.get("OBS_HEALTH_FILE")
    if not path:
        return True
    with open(path) as f:
        state = f.read().strip()
    if state == "hang":
        time.sleep(3)
    return (state == "ok", f"state={state}")


@app.health_check("cache")
async def cache_check():
    await asyncio.sleep(0.001)
    return True


@app.get("/users/{id:int}")
def user(request, id: int):
    return {"id": id}


@app.post("/items")
def items(request):
    return {"size": len(request.body())}


@app.get("/slow")
async def slow(request):
    await asyncio.sleep(float(request.query.get("s", "1")))
    return {"slept": True}


@app.get("/blocking", blocking=True)
def blocking(request):
    time.sleep(0.05)
    return {"ok": True}


@app.get("/hold")
def hold(request):
    # Holds the Python thread (a sync handler run inline).
    time.sleep(float(request.query.get("s", "1")))
    return {"held": True}


@app.get("/boom")
def boom(request):
    raise RuntimeError("boom")


@app.get("/pid")
def pid(request):
    return {"pid": os.getpid()}


@app.get("/checks")
def checks(request):
    return dict(check_calls)


@app.get("/log")
def log_line(request):
    handler_log.warning("hello from the handler")
    return {"logged": True}


@app.get("/excluded/x")
def excluded(request):
    return {"ok": True}


@app.get("/span")
async def span(request):
    from opentelemetry import trace

    tracer = trace.get_tracer("obs.handler")
    with tracer.start_as_current_span("db.query", attributes={"db.system": "postgresql", "rows": 3}) as s:
        s.add_event("fetched", {"n": 3})
        await asyncio.sleep(0.001)
        with tracer.start_as_current_span("inner"):
            handler_log.warning("inside a python span")
    return {"ok": True}


if __name__ == "__main__":
    app.run()
