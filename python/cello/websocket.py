"""WebSocket: the handler-facing connection objects and message values.

``@app.websocket(path)`` registers a handler taking a ``WebSocket`` (``async def``) or a
``SyncWebSocket`` (``def``, run on a thread of its own, off the event loop). The protocol
(handshake, frames, pings, limits, close) runs in Rust (``cello-server/src/websocket.rs``);
these objects only move messages over two bounded channels, so a slow side pushes back on
the other instead of growing memory.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

__all__ = ["SyncWebSocket", "WebSocket", "WebSocketDisconnect", "WebSocketMessage"]

_TYPES = ("text", "binary", "ping", "pong", "close")


class _ConstructorOrField:
    """``WebSocketMessage.text("hi")`` builds a message; ``msg.text`` reads its text.

    API.md names the constructor and the property alike, so on the class this is
    the constructor and on an instance it is the field.
    """

    def __init__(self, constructor: Any, field: str) -> None:
        self._constructor = constructor
        self._field = field
        self.__doc__ = constructor.__doc__

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self._constructor.__get__(None, owner)
        return getattr(obj, self._field)


class WebSocketMessage:
    """A WebSocket message: ``msg_type`` is ``"text"``, ``"binary"``, ``"ping"``,
    ``"pong"`` or ``"close"``; ``text`` holds the text of text messages (and the
    reason of close messages), ``data`` the payload bytes, ``code`` the close code."""

    __slots__ = ("_code", "_data", "_msg_type", "_text")

    def __init__(self, msg_type: str, text: str | None = None, data: bytes | None = None, code: int | None = None):
        if msg_type not in _TYPES:
            raise ValueError(f"msg_type must be one of {', '.join(_TYPES)}, not {msg_type!r}")
        self._msg_type = msg_type
        self._text = text
        self._data = bytes(data) if data is not None else None
        self._code = code

    # -- constructors (class access) / fields (instance access) -------------------------------
    @classmethod
    def _new_text(cls, text: str) -> WebSocketMessage:
        """A text message."""
        if not isinstance(text, str):
            raise TypeError("a text message needs a str")
        return cls("text", text=text, data=text.encode())

    text = _ConstructorOrField(_new_text, "_text")

    @classmethod
    def binary(cls, data: bytes | bytearray | memoryview) -> WebSocketMessage:
        """A binary message."""
        return cls("binary", data=bytes(data))

    @classmethod
    def ping(cls, data: bytes = b"") -> WebSocketMessage:
        """A ping; the payload is at most 125 bytes (RFC 6455 §5.5)."""
        data = bytes(data)
        if len(data) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        return cls("ping", data=data)

    @classmethod
    def pong(cls, data: bytes = b"") -> WebSocketMessage:
        data = bytes(data)
        if len(data) > 125:
            raise ValueError("a pong payload is at most 125 bytes")
        return cls("pong", data=data)

    @classmethod
    def close(cls, code: int = 1000, reason: str = "") -> WebSocketMessage:
        """A close message with a status code (RFC 6455 §7.4) and a reason of at most 123 bytes."""
        if isinstance(code, bool) or not isinstance(code, int) or not (1000 <= code <= 4999):
            raise ValueError("a close code is an int between 1000 and 4999")
        if code in (1004, 1005, 1006, 1015):
            raise ValueError(f"close code {code} is reserved and cannot be sent")
        payload = code.to_bytes(2, "big") + reason.encode()
        if len(payload) > 125:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")
        return cls("close", text=reason, data=payload, code=code)

    # -- fields --------------------------------------------------------------------------------
    @property
    def msg_type(self) -> str:
        return self._msg_type

    @property
    def data(self) -> bytes:
        return self._data if self._data is not None else b""

    @property
    def code(self) -> int | None:
        return self._code

    @property
    def reason(self) -> str | None:
        return self._text if self._msg_type == "close" else None

    def is_text(self) -> bool:
        return self._msg_type == "text"

    def is_binary(self) -> bool:
        return self._msg_type == "binary"

    def is_close(self) -> bool:
        return self._msg_type == "close"

    def is_ping(self) -> bool:
        return self._msg_type == "ping"

    def is_pong(self) -> bool:
        return self._msg_type == "pong"

    def json(self) -> Any:
        """The JSON value of a text (or UTF-8 binary) message."""
        return json.loads(self._text if self._text is not None and self._msg_type == "text" else self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WebSocketMessage):
            return NotImplemented
        return (self._msg_type, self._text, self.data, self._code) == (
            other._msg_type,
            other._text,
            other.data,
            other._code,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self._msg_type == "text":
            return f"WebSocketMessage.text({self._text!r})"
        if self._msg_type == "close":
            return f"WebSocketMessage.close({self._code!r}, {self._text!r})"
        return f"WebSocketMessage.{self._msg_type}({self.data!r})"


class WebSocketDisconnect(ConnectionError):
    """The connection is closed: raised by ``receive_text()``/``receive_json()``/... after the
    peer closed (``code`` is its close code, 1006 when it vanished) and by ``send_*`` then."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(f"WebSocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


def _message(raw: Any) -> WebSocketMessage:
    if raw is None:  # the session is over without a close frame reaching us
        return WebSocketMessage("close", text="", code=1006)
    kind, payload, code = raw
    if kind == "text":
        return WebSocketMessage("text", text=payload, data=payload.encode())
    if kind == "binary":
        return WebSocketMessage("binary", data=payload)
    return WebSocketMessage("close", text=payload, code=1005 if code is None else code)


def _close_code(code: int) -> int:
    if isinstance(code, bool) or not isinstance(code, int) or not (1000 <= code <= 4999):
        raise ValueError("a close code is an int between 1000 and 4999")
    if code in (1004, 1005, 1006, 1015):
        raise ValueError(f"close code {code} is reserved and cannot be sent")
    return code


class _Base:
    """What both styles share: the request view of the upgrade and the connection state."""

    def __init__(self, conn: Any, request: Any) -> None:
        self._conn = conn
        self._request = request
        self._closed: WebSocketMessage | None = None  # the close we received or sent
        self._accepted = False

    @property
    def request(self) -> Any:
        """The upgrade request (headers, query, cookies, ``context`` from guards)."""
        return self._request

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return self._conn.subprotocols

    @property
    def accepted(self) -> bool:
        return self._accepted

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def close_code(self) -> int | None:
        return self._closed.code if self._closed is not None else None

    def __getattr__(self, name: str) -> Any:
        # ``ws.params``, ``ws.headers``, ``ws.query``, ``ws.context``...: the upgrade request's.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._request, name)

    def _accept(self, subprotocol: str | None, headers: Any) -> None:
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        self._conn.accept(subprotocol, [(str(k), str(v)) for k, v in pairs])
        self._accepted = True

    def _need_accepted(self) -> None:
        if not self._accepted:
            raise RuntimeError("call accept() before sending or receiving")

    def _seen(self, msg: WebSocketMessage) -> WebSocketMessage:
        if msg.is_close():
            self._closed = msg
        return msg

    def _check_open(self) -> None:
        if self._closed is not None:
            raise WebSocketDisconnect(self._closed.code or 1005, self._closed.reason or "")

    @staticmethod
    def _outgoing(message: Any) -> tuple[str, Any, int | None]:
        if isinstance(message, WebSocketMessage):
            if message.is_text():
                return "text", message.text, None
            if message.is_binary():
                return "binary", message.data, None
            if message.is_close():
                return "close", message.reason or "", message.code
            raise ValueError("pings and pongs are handled by the server (keep-alive)")
        if isinstance(message, str):
            return "text", message, None
        if isinstance(message, (bytes, bytearray, memoryview)):
            return "binary", bytes(message), None
        raise TypeError(f"send() takes str, bytes or a WebSocketMessage, not {type(message).__name__}")


class WebSocket(_Base):
    """The connection an ``async def`` WebSocket handler gets: ``await ws.accept()``, then
    ``receive*()`` / ``send*()`` / ``close()``, or ``async for msg in ws``."""

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Answer the handshake (``101``), optionally choosing one of ``subprotocols``."""
        self._accept(subprotocol, headers)

    async def receive(self) -> WebSocketMessage:
        """The next message; a close message (``is_close()``) once the peer closed."""
        self._need_accepted()
        if self._closed is not None:
            return self._closed
        return self._seen(_message(await self._conn.receive()))

    async def _data(self) -> WebSocketMessage:
        msg = await self.receive()
        if msg.is_close():
            raise WebSocketDisconnect(msg.code or 1005, msg.reason or "")
        return msg

    async def receive_text(self) -> str:
        """The next message as text (a binary one is decoded as UTF-8)."""
        msg = await self._data()
        return msg.text if msg.is_text() else msg.data.decode()

    async def receive_bytes(self) -> bytes:
        """The next message as bytes (a text one is encoded as UTF-8)."""
        return (await self._data()).data

    async def receive_json(self) -> Any:
        """The next message parsed as JSON."""
        return (await self._data()).json()

    async def send(self, message: Any) -> None:
        """Send ``str`` (text), ``bytes`` (binary) or a ``WebSocketMessage``; waits while the
        client is not reading and the send queue is full."""
        self._need_accepted()
        kind, data, code = self._outgoing(message)
        if kind == "close":
            return await self.close(code or 1000, data)
        self._check_open()
        try:
            await self._conn.send(kind, data)
        except ConnectionError:
            raise WebSocketDisconnect(1006) from None

    async def send_text(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError("send_text() takes a str")
        await self.send(text)

    async def send_binary(self, data: bytes) -> None:
        await self.send(bytes(data))

    send_bytes = send_binary

    async def send_json(self, data: Any) -> None:
        await self.send(json.dumps(data, separators=(",", ":")))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake (no-op when already closed)."""
        code = _close_code(code)
        if not self._accepted:
            # Closing before accepting refuses the handshake (403), as in Starlette.
            self._closed = WebSocketMessage("close", text=reason, code=code)
            return
        if self._closed is not None:
            return
        self._closed = WebSocketMessage("close", text=reason, code=code)
        try:
            await self._conn.send("close", reason, code)
        except ConnectionError:
            pass

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> WebSocketMessage:
        msg = await self.receive()
        if msg.is_close():
            raise StopAsyncIteration
        return msg


class SyncWebSocket(_Base):
    """The connection a sync (``def``) WebSocket handler gets; it runs on its own thread.
    The handshake is accepted before the handler runs; ``recv()`` returns ``str``/``bytes``,
    or ``None`` once the connection is closed."""

    def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Already done for sync handlers unless they call it first (to pick a subprotocol)."""
        if not self._accepted:
            self._accept(subprotocol, headers)

    def receive(self) -> WebSocketMessage:
        self._need_accepted()
        if self._closed is not None:
            return self._closed
        return self._seen(_message(self._conn.receive_blocking()))

    def recv(self) -> str | bytes | None:
        """The next message's text or bytes; ``None`` when the connection is closed."""
        msg = self.receive()
        if msg.is_close():
            return None
        return msg.text if msg.is_text() else msg.data

    def receive_text(self) -> str:
        msg = self.receive()
        if msg.is_close():
            raise WebSocketDisconnect(msg.code or 1005, msg.reason or "")
        return msg.text if msg.is_text() else msg.data.decode()

    def receive_json(self) -> Any:
        return json.loads(self.receive_text())

    def send(self, message: Any) -> None:
        self._need_accepted()
        kind, data, code = self._outgoing(message)
        if kind == "close":
            return self.close(code or 1000, data)
        self._check_open()
        try:
            self._conn.send_blocking(kind, data)
        except ConnectionError:
            raise WebSocketDisconnect(1006) from None

    def send_text(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError("send_text() takes a str")
        self.send(text)

    def send_binary(self, data: bytes) -> None:
        self.send(bytes(data))

    send_bytes = send_binary

    def send_json(self, data: Any) -> None:
        self.send(json.dumps(data, separators=(",", ":")))

    def close(self, code: int = 1000, reason: str = "") -> None:
        code = _close_code(code)
        if self._closed is not None:
            return
        self._closed = WebSocketMessage("close", text=reason, code=code)
        try:
            self._conn.send_blocking("close", reason, code)
        except ConnectionError:
            pass

    def __iter__(self) -> SyncWebSocket:
        return self

    def __next__(self) -> WebSocketMessage:
        msg = self.receive()
        if msg.is_close():
            raise StopIteration
        return msg


def run_in_thread(fn: Any, *args: Any) -> asyncio.Future:
    """Run a sync WebSocket handler on a thread of its own (it holds it for the connection's
    life, so it must not take a slot of the bounded pool that blocking HTTP handlers share)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the loop
            loop.call_soon_threadsafe(settle, False, e)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=run, name="cello-ws", daemon=True).start()
    return fut
