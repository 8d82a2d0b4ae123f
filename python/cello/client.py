"""``AsyncClient`` / ``HttpResponse``: an outgoing HTTP client for handlers (published names).

It runs on the worker's asyncio loop through httpx (connection pooling, HTTP/1.1 and HTTP/2,
timeouts), which must be installed: ``pip install httpx``.
"""

from __future__ import annotations

import json as _json
from collections.abc import Mapping
from typing import Any


class HttpResponse:
    """A response received by ``AsyncClient``."""

    __slots__ = ("content", "headers", "status_code", "url")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes, url: str = "") -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.url = url

    @property
    def status(self) -> int:
        return self.status_code

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def body(self) -> bytes:
        return self.content

    def json(self) -> Any:
        return _json.loads(self.content)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def raise_for_status(self) -> HttpResponse:
        if self.status_code >= 400:
            raise HttpError(self)
        return self

    def __repr__(self) -> str:
        return f"<HttpResponse [{self.status_code}]>"


class HttpError(Exception):
    """``raise_for_status()`` on a 4xx/5xx response."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(f"HTTP {response.status_code} from {response.url}")
        self.response = response


class AsyncClient:
    """``async with AsyncClient(base_url=...) as c: r = await c.get("/x")``."""

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = False,
        http2: bool = False,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise ImportError("cello.AsyncClient needs httpx: pip install httpx") from None
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            headers=dict(headers or {}),
            follow_redirects=follow_redirects,
            http2=http2,
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        kw: dict[str, Any] = {"params": params, "headers": headers}
        if json is not None:
            kw["json"] = json
        if data is not None:
            kw["data"] = data
        if content is not None:
            kw["content"] = content
        if timeout is not None:
            kw["timeout"] = timeout
        r = await self._client.request(method.upper(), url, **kw)
        return HttpResponse(r.status_code, r.headers, r.content, str(r.url))

    async def get(self, url: str, **kw: Any) -> HttpResponse:
        return await self.request("GET", url, **kw)

    async def post(self, url: str, **kw: Any) -> HttpResponse:
        return await self.request("POST", url, **kw)

    async def put(self, url: str, **kw: Any) -> HttpResponse:
        return await self.request("PUT", url, **kw)

    async def patch(self, url: str, **kw: Any) -> HttpResponse:
        return await self.request("PATCH", url, **kw)

    async def delete(self, url: str, **kw: Any) -> HttpResponse:
        return await self.request("DELETE", url, **kw)

    async def head(self, url: str, **kw: Any) -> HttpResponse:
        return await self.request("HEAD", url, **kw)

    async def options(self, url: str, **kw: Any) -> HttpResponse:
        return await self.request("OPTIONS", url, **kw)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncClient", "HttpError", "HttpResponse"]
