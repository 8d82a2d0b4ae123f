"""``Response``: what a handler returns when it wants control over the answer.

The Rust side reads a response through ``_cello_parts()`` only:
``(status, headers, kind, payload)`` where kind 0 is a bytes body, 1 a file
``(path, content_type, filename, range_header, ranged)`` and 2 an iterable.
"""

from __future__ import annotations

import os
from typing import Any

from ._cello import dumps as _dumps

_BAD_HEADER_CHARS = ("\r", "\n", "\0")


class Response:
    __slots__ = ("_body", "_headers", "_kind", "_payload", "status")

    def __init__(self, body: Any = None, status: int | None = None, headers: dict[str, str] | None = None,
                 content_type: str | None = None) -> None:  # fmt: skip
        self.status = 200 if status is None else int(status)
        self._headers: list[tuple[str, str]] = []
        self._kind = 0
        self._payload: Any = None
        if isinstance(body, str):
            body = body.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        elif isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body)
        elif body is not None:
            body = _dumps(body)
            content_type = content_type or "application/json"
        self._body = body
        if content_type:
            self._headers.append(("content-type", content_type))
        for k, v in (headers or {}).items():
            self.set_header(k, v)

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._headers)

    def set_header(self, key: str, value: str) -> None:
        key, value = str(key), str(value)
        if any(c in key or c in value for c in _BAD_HEADER_CHARS):
            raise ValueError("header names and values cannot contain CR, LF or NUL")
        low = key.lower()
        self._headers = [(k, v) for k, v in self._headers if k.lower() != low]
        self._headers.append((key, value))

    def body(self) -> bytes:
        return self._body or b""

    def content_type(self) -> str | None:
        for k, v in self._headers:
            if k.lower() == "content-type":
                return v
        return None

    def content_length(self) -> int:
        return len(self._body or b"")

    def _cello_parts(self) -> tuple[int, list[tuple[str, str]], int, Any]:
        if self._kind == 0:
            return self.status, self._headers, 0, self._body
        return self.status, self._headers, self._kind, self._payload

    @classmethod
    def json(cls, data: Any, status: int | None = None) -> Response:
        return cls(_dumps(data), status=status, content_type="application/json")

    @classmethod
    def text(cls, content: str, status: int | None = None) -> Response:
        return cls(str(content).encode(), status=status, content_type="text/plain; charset=utf-8")

    @classmethod
    def html(cls, content: str, status: int | None = None) -> Response:
        return cls(str(content).encode(), status=status, content_type="text/html; charset=utf-8")

    @classmethod
    def binary(cls, data: bytes, content_type: str | None = None, status: int | None = None) -> Response:
        return cls(bytes(data), status=status, content_type=content_type or "application/octet-stream")

    @classmethod
    def file(cls, path: str | os.PathLike, filename: str | None = None, content_type: str | None = None) -> Response:
        r = cls()
        r._kind = 1
        r._payload = (os.fspath(path), content_type, filename, None, False)
        return r

    @classmethod
    def stream(cls, iterable: Any, content_type: str = "text/plain; charset=utf-8", status: int | None = None) -> Response:
        r = cls(status=status, content_type=content_type)
        r._kind = 2
        r._payload = iterable
        return r
