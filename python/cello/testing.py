"""``TestClient``: requests through the real Rust pipeline, in-process, no socket.

Each request goes through the same router, limits, HEAD/OPTIONS/405 handling and
handler dispatch as a served request; only the TCP connection is left out.
"""

from __future__ import annotations

import json as _json
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self
from urllib.parse import urlencode, urlsplit

from ._runtime import Executor
from .background import drain
from .errors import HTTPException


class Headers(Mapping[str, str]):
    """Case-insensitive, multi-valued response headers (``get`` returns the first value)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> str:
        low = key.lower()
        values = [v for k, v in self._items if k.lower() == low]
        if not values:
            raise KeyError(key)
        return ", ".join(values) if low != "set-cookie" else values[0]

    def get_list(self, key: str) -> list[str]:
        low = key.lower()
        return [v for k, v in self._items if k.lower() == low]

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Iterator[str]:
        seen: list[str] = []
        for k, _ in self._items:
            if k.lower() not in seen:
                seen.append(k.lower())
        return iter(seen)

    def __len__(self) -> int:
        return len({k.lower() for k, _ in self._items})

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and any(k.lower() == key.lower() for k, _ in self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class TestResponse:
    __test__ = False

    def __init__(self, status_code: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.status_code = status_code
        self.headers = Headers(headers)
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.content)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise AssertionError(f"HTTP {self.status_code}: {self.text[:500]}")

    def __repr__(self) -> str:
        return f"<TestResponse [{self.status_code}]>"


def _multipart(data: Mapping[str, Any] | None, files: Mapping[str, Any]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = bytearray()
    for k, value in (data or {}).items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode()
            out += str(v).encode() + b"\r\n"
    for k, spec in files.items():
        if isinstance(spec, tuple):
            filename, content, *rest = spec
            ctype = rest[0] if rest else "application/octet-stream"
        else:
            filename, content, ctype = getattr(spec, "name", k), spec, "application/octet-stream"
        if hasattr(content, "read"):
            content = content.read()
        if isinstance(content, str):
            content = content.encode()
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        out += bytes(content) + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class TestClient:
    """httpx-like client for an ``App``.

    As a context manager it runs the app's lifespan and startup/shutdown hooks. It honours
    ``app.dependency_overrides``; background tasks and dependency teardowns of a request have
    finished when its call returns. Like Starlette's, it re-raises an exception a handler did
    not handle (the one that would be a 500) into the test; ``raise_server_exceptions=False``
    gives the 500 response instead.
    """

    __test__ = False

    def __init__(
        self,
        app: Any,
        base_url: str = "http://testserver",
        debug: bool = True,
        raise_server_exceptions: bool = True,
    ) -> None:
        self.app = app
        self.base_url = base_url.rstrip("/")
        self.debug = debug
        self.raise_server_exceptions = raise_server_exceptions
        self._executor: Executor | None = None
        self._started = False
        self._server_error: BaseException | None = None

    def _ensure(self) -> Executor:
        if self._executor is None:
            self._executor = ex = Executor(self.app, self.app.server_config(debug=self.debug))
            self._capture_errors(ex)
        return self._executor

    def _capture_errors(self, ex: Executor) -> None:
        """Remember the exception behind a 500 so ``request()`` can re-raise it."""
        answer = ex.hooks.error

        def error(exc: BaseException, request: Any) -> Any:
            result = answer(exc, request)
            if result[0] == 500 and not isinstance(exc, HTTPException):
                self._server_error = exc
            return result

        ex.hooks.error = error

    def __enter__(self) -> Self:
        ex = self._ensure()
        ex.run_hooks("startup")
        self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is None:
            return
        try:
            if self._started:
                self._executor.run_hooks("shutdown")
        finally:
            self._executor.close()
            self._executor = None
            self._started = False

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        files: Mapping[str, Any] | None = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
    ) -> TestResponse:
        ex = self._ensure()
        parts = urlsplit(url)
        target = parts.path or "/"
        query = parts.query
        if params:
            extra = urlencode(params, doseq=True)
            query = f"{query}&{extra}" if query else extra
        if query:
            target += "?" + query
        host = urlsplit(self.base_url).netloc or "testserver"
        hdrs: list[tuple[str, str]] = [("host", parts.netloc or host), ("user-agent", "cello-testclient")]
        body = b""
        if json is not None:
            body = _json.dumps(json).encode()
            hdrs.append(("content-type", "application/json"))
        elif files:
            body, ctype = _multipart(data, files)
            hdrs.append(("content-type", ctype))
        elif isinstance(data, Mapping):
            body = urlencode(data, doseq=True).encode()
            hdrs.append(("content-type", "application/x-www-form-urlencoded"))
        elif data is not None or content is not None:
            raw = content if content is not None else data
            body = raw.encode() if isinstance(raw, str) else bytes(raw)
        if cookies:
            hdrs.append(("cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
        for k, v in (headers or {}).items():
            hdrs = [(hk, hv) for hk, hv in hdrs if hk.lower() != k.lower()]
            hdrs.append((k, v))
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            hdrs.append(("content-length", str(len(body))))
        fut = ex.loop.create_future()
        self._server_error = None
        ex.core.test_request(fut, method.upper(), target, [(k.encode(), v.encode()) for k, v in hdrs], body)
        status, resp_headers, resp_body = ex.loop.run_until_complete(fut)
        # What runs after the response (background tasks, teardowns) is done when we return.
        ex.loop.run_until_complete(drain(self.app))
        error, self._server_error = self._server_error, None
        if error is not None and self.raise_server_exceptions:
            raise error
        return TestResponse(status, [(k, v.decode("latin-1")) for k, v in resp_headers], resp_body)

    def get(self, url: str, **kw: Any) -> TestResponse:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> TestResponse:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> TestResponse:
        return self.request("PUT", url, **kw)

    def patch(self, url: str, **kw: Any) -> TestResponse:
        return self.request("PATCH", url, **kw)

    def delete(self, url: str, **kw: Any) -> TestResponse:
        return self.request("DELETE", url, **kw)

    def head(self, url: str, **kw: Any) -> TestResponse:
        return self.request("HEAD", url, **kw)

    def options(self, url: str, **kw: Any) -> TestResponse:
        return self.request("OPTIONS", url, **kw)
