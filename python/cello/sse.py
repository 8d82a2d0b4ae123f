"""Server-Sent Events: ``SseEvent`` framing and ``SseStream``, a buffer or live queue of
events to pass to ``Response.sse``.

Framing follows the HTML Living Standard ("Server-sent events"): each event is a
block of ``field: value`` lines ended by a blank line; multi-line data is sent as
several ``data:`` lines, which the browser joins with ``\\n``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from ._cello import dumps as _dumps

__all__ = ["SseEvent", "SseStream", "sse_chunks"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_EVENT_FIELDS = frozenset({"data", "event", "id", "retry"})


def _field(name: str, value: Any) -> str | None:
    if value is None:
        return None
    value = str(value)
    if "\r" in value or "\n" in value:
        raise ValueError(f"the SSE {name} field cannot contain CR or LF")
    if name == "id" and "\0" in value:
        raise ValueError("the SSE id field cannot contain NUL")
    return value


def _data_text(data: Any) -> str | None:
    if data is None or isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("utf-8")
    return _dumps(data).decode()  # dicts, lists, numbers, dataclasses, ... as JSON


class SseEvent:
    """One event: ``SseEvent(data, event=None, id=None, retry=None)``.

    ``data`` may be ``str`` (sent as is, one ``data:`` line per line), ``bytes``
    (UTF-8), ``None`` (no data line: an event that only sets ``id``/``retry``) or
    any JSON-encodable value (sent as JSON). ``retry`` is the reconnection time in
    milliseconds. ``event`` and ``id`` cannot contain line breaks.
    """

    __slots__ = ("_data", "_event", "_id", "_retry")

    def __init__(self, data: Any = None, event: str | None = None, id: str | None = None, retry: int | None = None):
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    @property
    def data(self) -> str | None:
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = _data_text(value)

    @property
    def event(self) -> str | None:
        return self._event

    @event.setter
    def event(self, value: str | None) -> None:
        self._event = _field("event", value)

    @property
    def id(self) -> str | None:
        return self._id

    @id.setter
    def id(self, value: str | None) -> None:
        self._id = _field("id", value)

    @property
    def retry(self) -> int | None:
        return self._retry

    @retry.setter
    def retry(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError("retry must be a non-negative int (milliseconds)")
        self._retry = value

    @classmethod
    def from_value(cls, value: Any) -> SseEvent:
        """An ``SseEvent`` from an event, a dict with ``data``/``event``/``id``/``retry``
        keys (any other dict is JSON data), or plain data."""
        if isinstance(value, SseEvent):
            return value
        if isinstance(value, Mapping) and "data" in value and set(value) <= _EVENT_FIELDS:
            return cls(value.get("data"), value.get("event"), value.get("id"), value.get("retry"))
        return cls(value)

    def to_sse_string(self) -> str:
        lines = []
        if self._event is not None:
            lines.append(f"event: {self._event}")
        if self._id is not None:
            lines.append(f"id: {self._id}")
        if self._retry is not None:
            lines.append(f"retry: {self._retry}")
        if self._data is not None:
            lines.extend(f"data: {line}" if line else "data:" for line in _LINE_BREAK.split(self._data))
        if not lines:  # an empty event still needs a line, or it would end the previous block twice
            lines.append(":")
        return "\n".join(lines) + "\n\n"

    def __str__(self) -> str:
        return self.to_sse_string()

    def __repr__(self) -> str:
        fields = [f"{self._data!r}"]
        for name in ("event", "id", "retry"):
            value = getattr(self, name)
            if value is not None:
                fields.append(f"{name}={value!r}")
        return f"SseEvent({', '.join(fields)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SseEvent):
            return NotImplemented
        return (self._data, self._event, self._id, self._retry) == (other._data, other._event, other._id, other._retry)

    __hash__ = None  # type: ignore[assignment]


def sse_comment(text: str = "") -> str:
    """A comment line (``: text``), ignored by clients; handy as a keep-alive."""
    return "".join(f": {line}\n" if line else ":\n" for line in _LINE_BREAK.split(str(text))) + "\n"


_CLOSED = object()


class SseStream:
    """Events for ``Response.sse``, buffered or produced live.

    Buffered: ``add``/``add_data``/``add_event`` then return ``Response.sse(stream)``;
    the response ends after the buffered events.

    Live (``SseStream(live=True)``): the response sends the buffered events, then
    every event given to ``await stream.send(...)`` (or ``send_nowait``) until
    ``stream.close()``. ``maxsize`` bounds the queue so a producer faster than the
    client waits in ``send``. Live streams belong to the event loop they are used
    on; from another thread use ``loop.call_soon_threadsafe(stream.send_nowait, e)``.
    """

    def __init__(self, *, live: bool = False, maxsize: int = 0) -> None:
        self._events: list[SseEvent] = []
        self._live = bool(live)
        self._maxsize = maxsize
        self._queue: asyncio.Queue[Any] | None = None
        self._closed = False
        self._disconnected = False

    # ---- buffered --------------------------------------------------------------------------
    def add(self, event: SseEvent | Mapping[str, Any] | str) -> SseStream:
        self._events.append(SseEvent.from_value(event))
        return self

    def add_data(self, data: Any) -> SseStream:
        self._events.append(SseEvent(data))
        return self

    def add_event(self, event_type: str, data: Any) -> SseStream:
        self._events.append(SseEvent(data, event=event_type))
        return self

    def len(self) -> int:
        return len(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def is_empty(self) -> bool:
        return not self._events

    def clear(self) -> None:
        self._events.clear()

    @property
    def events(self) -> list[SseEvent]:
        return list(self._events)

    def __iter__(self) -> Iterator[SseEvent]:
        """The buffered events (live events need ``async for``)."""
        return iter(list(self._events))

    def to_sse_string(self) -> str:
        return "".join(e.to_sse_string() for e in self._events)

    # ---- live ------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self._live

    @property
    def closed(self) -> bool:
        return self._closed

    def _q(self) -> asyncio.Queue[Any]:
        if self._queue is None:
            self._queue = asyncio.Queue(self._maxsize)
        return self._queue

    @property
    def disconnected(self) -> bool:
        """True once the client has gone (the response stopped reading the stream)."""
        return self._disconnected

    def _check_open(self) -> None:
        if self._disconnected:
            raise ConnectionResetError("the client has disconnected from the SSE stream")
        if self._closed:
            raise RuntimeError("the SSE stream is closed")

    async def send(self, event: SseEvent | Mapping[str, Any] | str) -> None:
        """Queue an event for the client; waits while the queue is full. Raises
        ``ConnectionResetError`` once the client has gone, so a producer loop stops."""
        self._check_open()
        self._live = True
        await self._q().put(SseEvent.from_value(event))

    def send_nowait(self, event: SseEvent | Mapping[str, Any] | str) -> None:
        self._check_open()
        self._live = True
        self._q().put_nowait(SseEvent.from_value(event))

    def close(self) -> None:
        """End the stream after the events already queued."""
        if self._closed:
            return
        self._closed = True
        try:
            self._q().put_nowait(_CLOSED)
        except asyncio.QueueFull:
            pass  # the consumer sees ``closed`` once it has drained the queue

    async def __aiter__(self) -> AsyncIterator[SseEvent]:
        for event in list(self._events):
            yield event
        if not self._live:
            return
        queue = self._q()
        finished = False
        try:
            while True:
                if self._closed and queue.empty():
                    finished = True
                    return
                item = await queue.get()
                if item is _CLOSED:
                    finished = True
                    return
                yield item
        finally:
            if not finished:  # the consumer stopped early: the client has gone
                self._disconnected = True
                self._closed = True
                while not queue.empty():  # wake producers blocked in send()
                    queue.get_nowait()


def _chunk(item: Any) -> str:
    return SseEvent.from_value(item).to_sse_string()


HEARTBEAT = ": keep-alive\n\n"


def sse_chunks(events: Any, heartbeat: float | None = None) -> Any:
    """Map a sync or async iterable of events (or a single event) to SSE text chunks. With
    ``heartbeat`` (seconds), an async source that is quiet that long gets a comment line
    (``: keep-alive``) so proxies keep the connection and a vanished client is noticed."""
    if isinstance(events, (SseEvent, str, bytes, Mapping)):
        events = [events]
    if hasattr(events, "__aiter__"):
        if heartbeat:
            return _with_heartbeat(events, float(heartbeat))

        async def agen() -> AsyncIterator[str]:
            source = events.__aiter__()
            try:
                async for item in source:
                    yield _chunk(item)
            finally:
                closer = getattr(source, "aclose", None)
                if closer is not None:
                    await closer()

        return agen()

    def gen() -> Iterator[str]:
        source = iter(events)
        try:
            for item in source:
                yield _chunk(item)
        finally:
            closer = getattr(source, "close", None)
            if closer is not None:
                closer()

    return gen()


async def _with_heartbeat(events: Any, every: float) -> AsyncIterator[str]:
    source = events.__aiter__()
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(source.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield HEARTBEAT
                continue
            fut, pending = pending, None
            try:
                item = fut.result()
            except StopAsyncIteration:
                return
            yield _chunk(item)
    finally:
        if pending is not None:
            # Cancel the producer where it waits, and let it finish before closing it.
            pending.cancel()
            try:
                await pending
            except BaseException:  # noqa: BLE001 - CancelledError, StopAsyncIteration, its own error
                pass
        closer = getattr(source, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except RuntimeError:
                pass
