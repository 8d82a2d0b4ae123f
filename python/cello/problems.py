"""``ProblemDetails``: RFC 9457 (formerly 7807) problem documents built by an application."""

from __future__ import annotations

import http
from typing import Any

from ._cello import dumps as _dumps
from .responses import Response

__all__ = ["ProblemDetails"]

_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


class ProblemDetails(Exception):
    """``ProblemDetails(type_uri, title, status, detail=None, instance=None)``.

    Return it from a handler or raise it: either way the client gets this document as
    ``application/problem+json`` with its status (``headers`` adds response headers).

    ``with_extension(key, value)`` adds a member (chainable); ``to_json()`` gives the
    document, ``to_response()`` a ``Response`` with ``application/problem+json``.
    ``type_uri`` may be ``None`` or ``""`` for ``about:blank``; ``title`` ``None`` for the
    status phrase.
    """

    __slots__ = ("detail", "extensions", "headers", "instance", "status", "title", "type_uri")

    def __init__(
        self,
        type_uri: str | None,
        title: str | None,
        status: int,
        detail: str | None = None,
        instance: str | None = None,
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code (100-599), got {status!r}")
        self.type_uri = type_uri or "about:blank"
        if title is None:
            try:
                title = http.HTTPStatus(status).phrase
            except ValueError:
                title = "Error"
        self.title = title
        self.status = status
        self.detail = detail
        self.instance = instance
        self.extensions: dict[str, Any] = {}
        self.headers: dict[str, str] = {}
        super().__init__(detail or title)

    def with_extension(self, key: str, value: Any) -> ProblemDetails:
        if not isinstance(key, str) or not key:
            raise ValueError("an extension member needs a non-empty str name")
        if key in _MEMBERS:
            raise ValueError(f"{key!r} is a standard member; set it through the constructor")
        self.extensions[key] = value
        return self

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type_uri, "title": self.title, "status": self.status}
        if self.detail is not None:
            doc["detail"] = self.detail
        if self.instance is not None:
            doc["instance"] = self.instance
        doc.update(self.extensions)
        return doc

    def to_json(self) -> str:
        return _dumps(self.to_dict()).decode()

    def to_response(self, headers: dict[str, str] | None = None) -> Response:
        return Response(
            _dumps(self.to_dict()),
            status=self.status,
            headers={**self.headers, **(headers or {})} or None,
            content_type="application/problem+json",
        )

    def __cello_response__(self) -> Response:
        """How the runtime turns a returned ``ProblemDetails`` into a response."""
        return self.to_response()

    def __repr__(self) -> str:
        return f"ProblemDetails({self.type_uri!r}, {self.title!r}, {self.status!r}, detail={self.detail!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProblemDetails):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
