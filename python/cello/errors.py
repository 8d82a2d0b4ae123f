"""Exceptions a handler may raise to answer with an HTTP error, and problem+json helpers."""

from __future__ import annotations

import http
import json
from typing import Any

from ._cello import CelloError, ConfigError, JsonDecodeError


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(status: int, detail: str | None = None, instance: str | None = None, **extra: Any) -> bytes:
    """An RFC 7807 document as bytes."""
    doc: dict[str, Any] = {"type": "about:blank", "title": _phrase(status), "status": status}
    if detail is not None:
        doc["detail"] = detail
    if instance is not None:
        doc["instance"] = instance
    doc.update(extra)
    return json.dumps(doc, ensure_ascii=False).encode()


class HTTPException(Exception):
    """Raise to answer with ``status_code`` and a problem+json body (FastAPI habit)."""

    def __init__(
        self,
        status_code: int | None = None,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        status: int | None = None,
    ) -> None:
        # ``HTTPException(status, detail, headers=None)``; ``status_code=`` is FastAPI's name.
        if status_code is None:
            status_code = status
        if status_code is None:
            raise TypeError("HTTPException() needs a status code")
        status_code = int(status_code)
        super().__init__(detail or _phrase(status_code))
        self.status_code = status_code
        self.detail = detail if detail is not None else _phrase(status_code)
        self.headers = dict(headers or {})

    @property
    def status(self) -> int:
        return self.status_code


class FeatureNotAvailable(NotImplementedError):
    """A setting or feature Cello announces but does not do (yet): turning it on fails loudly
    rather than being accepted and ignored."""

    def __init__(self, feature: str, issue: int | None = None, *, hint: str | None = None) -> None:
        text = f"{feature} is not available" + (f" yet (issue {issue})" if issue is not None else "")
        if hint:
            text += f": {hint}"
        super().__init__(text)
        self.feature = self.name = feature
        self.issue = issue


__all__ = ["CelloError", "ConfigError", "FeatureNotAvailable", "HTTPException", "JsonDecodeError", "problem_body"]
