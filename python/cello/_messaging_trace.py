"""W3C trace context through message headers (OpenTelemetry messaging conventions).

``Producer.send`` makes a PRODUCER span ``<destination> publish`` — a child of the active
span (the request's server span, or a Python OpenTelemetry span) — and puts its context in
the message's ``traceparent`` / ``tracestate`` headers. A consumer runs each handler call
under a CONSUMER span ``<destination> process`` that continues that trace (its parent is the
producer span, remote); inside the handler it is the active span, so log records carry its
ids and a message sent from the handler continues the trace again.

Spans go to the process's OTLP pipeline (``app.enable_telemetry``, the Rust exporter of the
HTTP spans, through ``_cello.export_span``; under ``cello consume``, the pipeline each worker
starts when an App of the consumers' module enables telemetry). Where nothing is exported, no
span is made but the context still travels: the producer passes the active span's context on,
and a handler runs under the received one.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from . import observability as _obs

PRODUCER, CONSUMER = 3, 4  # the span kinds of `_cello.export_span` (the Python SDK's numbering)
_SCOPE = "cello.messaging"

Context = tuple[int, int, int, str]  # trace id, span id, flags, tracestate


def _native() -> Any:
    from . import _cello

    return _cello


def _exporting() -> bool:
    return bool(_native().telemetry_enabled())


def _new_id(bits: int) -> int:
    while True:
        value = random.getrandbits(bits)
        if value:
            return value


def traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags & 0xFF:02x}"


def parse(headers: dict[str, str] | list[tuple[str, str]]) -> Context | None:
    """The context a message carries (``traceparent`` / ``tracestate``), or None."""
    items = headers.items() if isinstance(headers, dict) else headers
    found = {str(k).lower(): str(v) for k, v in items if str(k).lower() in ("traceparent", "tracestate")}
    parsed = _obs._parse_traceparent(found.get("traceparent"))
    if parsed is None:
        return None
    try:
        trace_id, span_id = int(parsed[0], 16), int(parsed[1], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, parsed[2], found.get("tracestate", "")


def current() -> Context | None:
    """The active span's context: a Python OpenTelemetry span of the handler's own, else the
    span Cello made current (a request's server span, a message's consumer span)."""
    ids = _obs._current.get()
    flags, state = _obs._current_w3c.get() or (1, "")
    otel = _obs._otel()
    if otel is not None:
        sc = otel[1].get_current_span().get_span_context()
        if sc.is_valid and (ids is None or f"{sc.span_id:016x}" != ids[1]):
            state = ",".join(f"{k}={v}" for k, v in sc.trace_state.items()) if sc.trace_state else ""
            return sc.trace_id, sc.span_id, int(sc.trace_flags), state
    if ids is None:
        return None
    return int(ids[0], 16), int(ids[1], 16), flags, state


class _Span:
    """A span exported through the process's OTLP pipeline when it ends (if sampled)."""

    def __init__(self, name: str, kind: int, parent: Context | None, remote: bool, attributes: dict) -> None:
        if parent is None:
            self.trace_id, self.parent_id, self.flags, self.state = _new_id(128), 0, 1, ""
        else:
            self.trace_id, self.parent_id, self.flags, self.state = parent
        self.span_id = _new_id(64)
        self.name, self.kind, self.remote, self.attributes = name, kind, remote and parent is not None, attributes
        self.start = time.time_ns()

    @property
    def context(self) -> Context:
        return self.trace_id, self.span_id, self.flags, self.state

    def end(self, error: BaseException | None = None) -> None:
        if not self.flags & 1:
            return  # not sampled: the context travels, nothing is exported
        attrs = [(k, v) for k, v in self.attributes.items() if v is not None]
        status, description = 0, ""
        if error is not None:
            attrs.append(("error.type", type(error).__qualname__))
            status, description = 2, f"{type(error).__name__}: {error}"
        _native().export_span(self.name, self.trace_id, self.span_id, self.parent_id, self.remote, self.flags,
                              self.state, self.kind, self.start, time.time_ns(), attrs, [], status, description,
                              _SCOPE, None)  # fmt: skip


def _with_context(headers: list[tuple[str, str]], ctx: Context) -> list[tuple[str, str]]:
    out = [*headers, ("traceparent", traceparent(ctx[0], ctx[1], ctx[2]))]
    if ctx[3]:
        out.append(("tracestate", ctx[3]))
    return out


async def publish(
    system: str,
    destination: str,
    headers: list[tuple[str, str]],
    send: Callable[[list[tuple[str, str]]], Awaitable[Any]],
    inject: bool = True,
) -> Any:
    """``send(headers)`` under a PRODUCER span whose context the headers carry. A message whose
    headers hold a ``traceparent`` already, or that carries no headers (``inject=False``:
    Redis lists), is sent as it is."""
    if not inject or any(k.lower() == "traceparent" for k, _ in headers):
        return await send(headers)
    parent = current()
    if not _exporting():
        return await send(headers if parent is None else _with_context(headers, parent))
    span = _publish_span(system, destination, parent)
    try:
        message_id = await send(_with_context(headers, span.context))
    except BaseException as exc:
        span.end(exc)
        raise
    if message_id:
        span.attributes["messaging.message.id"] = str(message_id)
    span.end()
    return message_id


def _publish_span(system: str, destination: str, parent: Context | None) -> _Span:
    return _Span(f"{destination} publish", PRODUCER, parent, False, {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation": "publish",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
    })  # fmt: skip


async def publish_batch(
    system: str,
    messages: list[tuple[str, list[tuple[str, str]]]],
    send: Callable[[list[list[tuple[str, str]]]], Awaitable[list[Any]]],
) -> list[Any]:
    """``send(headers of each message)`` for ``messages`` (destination, headers), each under a
    PRODUCER span of its own whose context its headers carry, as ``publish`` does for one.
    ``send`` answers one result per message: its id, or the exception it failed with."""
    parent = current()
    exporting = _exporting()
    spans: list[_Span | None] = []
    headers: list[list[tuple[str, str]]] = []
    for destination, hs in messages:
        if any(k.lower() == "traceparent" for k, _ in hs) or (not exporting and parent is None):
            spans.append(None)
            headers.append(hs)
        elif not exporting:
            spans.append(None)
            headers.append(_with_context(hs, parent))
        else:
            span = _publish_span(system, destination, parent)
            spans.append(span)
            headers.append(_with_context(hs, span.context))
    try:
        results = await send(headers)
    except BaseException as exc:
        for span in spans:
            if span is not None:
                span.end(exc)
        raise
    for span, result in zip(spans, results, strict=True):
        if span is None:
            continue
        if isinstance(result, BaseException):
            span.end(result)
            continue
        if result:
            span.attributes["messaging.message.id"] = str(result)
        span.end()
    return results


@contextlib.contextmanager
def _active(ctx: Context) -> Iterator[None]:
    """``ctx`` as the active span: for Cello's trace ids (logs, producers) and the Python
    OpenTelemetry API (spans made in the handler become its children)."""
    token = _obs._current.set((f"{ctx[0]:032x}", f"{ctx[1]:016x}"))
    w3c_token = _obs._current_w3c.set((ctx[2], ctx[3]))
    otel, otel_token = _obs._otel(), None
    if otel is not None:
        context, trace = otel
        span_context = trace.SpanContext(ctx[0], ctx[1], is_remote=False, trace_flags=trace.TraceFlags(ctx[2]))
        otel_token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
    try:
        yield
    finally:
        if otel_token is not None:
            with contextlib.suppress(Exception):
                otel[0].detach(otel_token)
        _obs._current_w3c.reset(w3c_token)
        _obs._current.reset(token)


@contextlib.contextmanager
def process(spec: Any, message: Any) -> Iterator[None]:
    """One handler call under a CONSUMER span ``<destination> process`` continuing the
    message's trace."""
    parent = parse(message.headers)
    if not _exporting():
        if parent is None:
            yield
        else:
            with _active(parent):
                yield
        return
    group = spec.group or spec.source if spec.kind == "redis" and spec.mode == "stream" else spec.group
    span = _Span(f"{spec.source} process", CONSUMER, parent, True, {
        "messaging.system": spec.kind,
        "messaging.destination.name": spec.source,
        "messaging.operation": "process",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": message.id or None,
        "messaging.message.body.size": len(message.body),
        "messaging.consumer.group.name": group,
        "messaging.rabbitmq.destination.routing_key": spec.source if spec.kind == "rabbitmq" else None,
        "cello.messaging.delivery_count": message.delivery_count,
    })  # fmt: skip
    with _active(span.context):
        try:
            yield
        except BaseException as exc:
            span.end(exc)
            raise
    span.end()
