"""WebSocket message types.

Only the data types live here for now: ``WebSocketMessage`` values are what a
WebSocket handler will receive and send. The WebSocket transport (the upgrade and
the ``WebSocket`` connection object of API.md) is not built yet.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["WebSocketMessage"]

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
