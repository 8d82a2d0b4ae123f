"""Observability glue: worker metrics aggregation, health checks, the OpenTelemetry bridge and
structured (JSON) logs.

Metrics, probes and server spans live in Rust (``cello-server``); this module holds what needs
Python: the ``@app.health_check`` registry, handing the server span to the Python
``opentelemetry`` API (so spans made in a handler are its children, exported through the same
Rust OTLP pipeline), ``trace_id``/``span_id`` on log records, and the JSON log formatter.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from . import _env

METRICS_DIR_ENV = "CELLO_METRICS_DIR"
LOG_FORMAT_ENV = "CELLO_LOG_FORMAT"

log = logging.getLogger("cello")
error_log = logging.getLogger("cello.error")

# ---- worker aggregation (used by the supervisor) --------------------------------------------


def prepare_metrics_dir() -> str:
    """Make the directory the workers of one server share for metrics, export it as
    ``$CELLO_METRICS_DIR`` (inherited by forked workers) and return it.

    Call in the supervisor before forking. An existing ``$CELLO_METRICS_DIR`` is kept (and
    created if missing), otherwise a fresh temporary directory is made; remove it with
    ``cleanup_metrics_dir`` when the server exits.
    """
    existing = _env.lookup(METRICS_DIR_ENV)
    if existing:
        os.makedirs(existing, exist_ok=True)
        return existing
    path = tempfile.mkdtemp(prefix="cello-metrics-")
    os.environ[METRICS_DIR_ENV] = path
    return path


def write_supervisor_stats(workers: int, restarts: int, directory: str | None = None) -> None:
    """Publish ``cello_workers`` and ``cello_worker_restarts_total`` (atomically replaced)."""
    directory = directory or _env.lookup(METRICS_DIR_ENV)
    if not directory:
        return
    tmp = os.path.join(directory, ".supervisor.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"workers": int(workers), "restarts": int(restarts)}, f)
    os.replace(tmp, os.path.join(directory, "supervisor.json"))


def cleanup_metrics_dir(path: str) -> None:
    """Remove a directory made by ``prepare_metrics_dir`` (and unset the variable)."""
    shutil.rmtree(path, ignore_errors=True)
    if _env.lookup(METRICS_DIR_ENV) == path:
        del os.environ[METRICS_DIR_ENV]


# ---- health checks ---------------------------------------------------------------------------

_builtin_checks: dict[str, Callable[[], Any]] = {}


def register_builtin_check(name: str, check: Callable[[], Any]) -> None:
    """Data sources (database, Redis, ...) register their readiness check here when enabled."""
    _builtin_checks[name] = check


async def _run_check(name: str, check: Callable[[], Any], timeout: float) -> tuple[str, bool, str | None, float]:
    started = time.perf_counter()
    try:
        if inspect.iscoroutinefunction(check):
            result = await asyncio.wait_for(check(), timeout)
        else:
            loop = asyncio.get_running_loop()
            result = await asyncio.wait_for(loop.run_in_executor(None, check), timeout)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, timeout)
    except asyncio.TimeoutError:
        return name, False, f"timed out after {timeout:g} s", (time.perf_counter() - started) * 1000
    except Exception as exc:  # noqa: BLE001 - a failing check is a result, not an error
        return name, False, f"{type(exc).__name__}: {exc}", (time.perf_counter() - started) * 1000
    ms = (time.perf_counter() - started) * 1000
    # True/None: healthy; False: unhealthy; a (bool, detail) pair or a dict with "status".
    if isinstance(result, tuple) and len(result) == 2:
        ok, detail = result
        return name, bool(ok), None if detail is None else str(detail), ms
    if isinstance(result, dict):
        status = str(result.get("status", "UP")).upper()
        return name, status in ("UP", "OK", "HEALTHY"), result.get("detail"), ms
    return name, result is None or bool(result), None, ms


async def run_health_checks(app: Any, timeout: float) -> list[tuple[str, bool, str | None, float]]:
    """Run the app's ``@health_check`` functions and the built-in ones concurrently."""
    checks = {**_builtin_checks, **getattr(app, "_health_checks", {})}
    if not checks:
        return []
    return list(await asyncio.gather(*(_run_check(n, c, timeout) for n, c in checks.items())))


# ---- trace context in handlers and logs -------------------------------------------------------

# (trace_id, span_id) of the server span of the request being handled.
_current: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("cello_trace", default=None)
# (trace flags, tracestate) of that span: what a message producer passes on (`_messaging_trace`).
_current_w3c: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar("cello_w3c", default=None)


def _parse_traceparent(value: str | None) -> tuple[str, str, int] | None:
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        return parts[1], parts[2], int(parts[3][:2], 16)
    except ValueError:
        return None


def _otel() -> Any:
    try:
        from opentelemetry import context, trace
    except ImportError:
        return None
    return context, trace


def current_trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the active span: a Python OpenTelemetry span if one is current,
    else the server span of the request being handled."""
    otel = _otel()
    if otel is not None:
        span_context = otel[1].get_current_span().get_span_context()
        if span_context.is_valid:
            return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
    return _current.get()


def wrap_endpoint(endpoint: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Run ``endpoint`` with the server span as the current context (Python spans become its
    children; log records carry its ids). Rust put the server span's ``traceparent`` in the
    request headers."""
    otel = _otel()

    def enter(request: Any) -> tuple[Any, Any]:
        parsed = _parse_traceparent(request.headers.get("traceparent"))
        if parsed is None:
            return None, None
        trace_id, span_id, flags = parsed
        token = (_current.set((trace_id, span_id)), _current_w3c.set((flags, request.headers.get("tracestate") or "")))
        otel_token = None
        if otel is not None:
            context, trace = otel
            span_context = trace.SpanContext(
                int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=trace.TraceFlags(flags)
            )
            otel_token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
        return token, otel_token

    def leave(tokens: tuple[Any, Any]) -> None:
        token, otel_token = tokens
        if otel_token is not None:
            with contextlib.suppress(Exception):
                otel[0].detach(otel_token)
        if token is not None:
            _current_w3c.reset(token[1])
            _current.reset(token[0])

    async def run_coroutine(request: Any, coro: Any) -> Any:
        tokens = enter(request)
        try:
            return await coro
        finally:
            leave(tokens)

    def wrapped(request: Any) -> Any:
        tokens = enter(request)
        try:
            result = endpoint(request)
        finally:
            leave(tokens)
        if inspect.iscoroutine(result):
            return run_coroutine(request, result)
        return result

    wrapped.__name__ = getattr(endpoint, "__name__", "endpoint")
    wrapped.__wrapped__ = endpoint  # type: ignore[attr-defined]
    return wrapped


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (or None) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            ids = current_trace_ids()
            record.trace_id, record.span_id = ids if ids else (None, None)
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ``trace_id``/``span_id`` when a
    span is active, the record's extra fields (the access log's method, path, status, ...) and
    the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id is None:
            ids = current_trace_ids()
            if ids:
                trace_id, record.span_id = ids
        if trace_id:
            out["trace_id"] = trace_id
            out["span_id"] = getattr(record, "span_id", None)
        for key, value in vars(record).items():
            if key in _STANDARD or key in out or key in ("trace_id", "span_id") or key.startswith("_"):
                continue
            out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(fmt: str | None = None, level: int | None = None) -> None:
    """One log setup for the process: ``fmt`` is ``"json"`` or ``"text"`` (default: the
    ``CELLO_LOG_FORMAT`` variable, else text).

    Records of every logger (Cello's and the application's) go to the root logger's handlers,
    formatted alike and carrying ``trace_id``/``span_id``; a stderr handler is added to the root
    when it has none (replacing Cello's default one on the ``cello`` logger). The data plane's
    Rust log events are forwarded to ``cello``/``cello.error``."""
    import sys

    fmt = (fmt or _env.lookup(LOG_FORMAT_ENV) or "text").strip().lower()
    if fmt not in ("json", "text"):
        raise ValueError(f"log format {fmt!r}: use 'json' or 'text'")
    root = logging.getLogger()
    cello_logger = logging.getLogger("cello")
    for handler in list(cello_logger.handlers):
        # Cello's own default handler (``configure_logging``): the root one below replaces it.
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.__stderr__):
            cello_logger.removeHandler(handler)
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    if cello_logger.level == logging.NOTSET:
        cello_logger.setLevel(level or logging.INFO)
    for handler in list(root.handlers) + list(cello_logger.handlers):
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
        elif handler.formatter is None or isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        if not any(isinstance(f, TraceContextFilter) for f in handler.filters):
            handler.addFilter(TraceContextFilter())
    _install_rust_bridge(cello_logger.getEffectiveLevel())


_rust_bridge = False


def _install_rust_bridge(level: int) -> None:
    global _rust_bridge
    if _rust_bridge:
        return
    from . import _cello

    _rust_bridge = bool(_cello.install_log_bridge(int(level)))


def _pump_rust_logs() -> None:
    from . import _cello

    for level, target, message, fields in _cello.take_logs():
        logger = error_log if level in ("WARN", "ERROR") else log
        extra = {"rust_target": target, **{f"rust_{k}": v for k, v in fields}}
        suffix = " ".join(f"{k}={v}" for k, v in fields)
        logger.log(
            {"ERROR": logging.ERROR, "WARN": logging.WARNING, "INFO": logging.INFO}.get(level, logging.DEBUG),
            "%s%s",
            message,
            f" ({suffix})" if suffix else "",
            extra=extra,
        )


# ---- Python spans -> the Rust exporter ------------------------------------------------------

_python_tracing = False


def setup_python_tracing() -> bool:
    """When ``opentelemetry-sdk`` is installed and the app set no tracer provider itself, install
    one whose spans go to Cello's OTLP pipeline (same batch queue, same collector). Returns
    whether Python spans are exported."""
    global _python_tracing
    if _python_tracing:
        return True
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
    except ImportError:
        return False
    from . import _cello

    class CelloSpanExporter(SpanExporter):
        """Hands finished spans to the Rust batch exporter (never blocks on the network)."""

        def export(self, spans: Any) -> Any:
            for span in spans:
                _export(span)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    def _attrs(attributes: Any) -> list[tuple[str, Any]]:
        return [(str(k), v) for k, v in (attributes or {}).items()]

    def _export(span: Any) -> None:
        ctx = span.get_span_context()
        parent = span.parent
        status = span.status
        scope = getattr(span, "instrumentation_scope", None)
        state = ",".join(f"{k}={v}" for k, v in ctx.trace_state.items()) if ctx.trace_state else ""
        _cello.export_span(
            span.name,
            ctx.trace_id,
            ctx.span_id,
            parent.span_id if parent is not None else 0,
            bool(parent is not None and parent.is_remote),
            int(ctx.trace_flags),
            state,
            int(span.kind.value),
            int(span.start_time or 0),
            int(span.end_time or 0),
            _attrs(span.attributes),
            [(e.name, int(e.timestamp), _attrs(e.attributes)) for e in span.events],
            int(status.status_code.value) if status is not None else 0,
            (status.description or "") if status is not None else "",
            scope.name if scope is not None else "cello.python",
            scope.version if scope is not None else None,
        )

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        current.add_span_processor(SimpleSpanProcessor(CelloSpanExporter()))
    else:
        provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
        provider.add_span_processor(SimpleSpanProcessor(CelloSpanExporter()))
        trace.set_tracer_provider(provider)
    _python_tracing = True
    return True


# ---- per-worker wiring (called by the Executor) ----------------------------------------------


def wrap_endpoints(config: dict[str, Any], endpoints: list[Callable[[Any], Any]]) -> list[Callable[[Any], Any]]:
    """With tracing on, run handlers under the server span's context."""
    if not (config.get("telemetry") or {}).get("enabled"):
        return endpoints
    setup_python_tracing()
    return [wrap_endpoint(e) for e in endpoints]


def attach(loop: asyncio.AbstractEventLoop) -> None:
    """Forward the data plane's log events to ``logging`` from this worker's loop."""
    if not _rust_bridge:
        return

    def pump() -> None:
        try:
            _pump_rust_logs()
        finally:
            if not loop.is_closed():
                loop.call_later(0.25, pump)

    loop.call_soon(pump)


def pooled(endpoint: Callable[[Any], Any], request: Any) -> Any:
    """Run a blocking handler in the pool, counted by ``cello_http_threadpool_busy``."""
    from . import _cello

    _cello.pool_enter()
    try:
        return endpoint(request)
    finally:
        _cello.pool_exit()


__all__ = [
    "JsonFormatter",
    "TraceContextFilter",
    "cleanup_metrics_dir",
    "current_trace_ids",
    "prepare_metrics_dir",
    "register_builtin_check",
    "setup_logging",
    "setup_python_tracing",
    "write_supervisor_stats",
]
