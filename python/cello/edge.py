"""The edge middleware switches of ``App`` (issue 10) and the Python middleware chain.

Every ``enable_*`` here only records a ``cello_config`` section; the layers themselves run in
Rust (``server/src/middleware``), in the order ``server/src/stack.rs`` defines. ``app.use()``
middleware is the exception: it is Python, runs innermost (around the handler, on the Python
thread) and only on Python routes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterable
from typing import Any

# Imported once here, not in the per-request helpers below (a function-level import costs
# a module lookup per call: ~5k instructions each under callgrind).
from .problems import ProblemDetails
from .responses import _CT_JSON, Response, _dumps, _object_new

__all__ = ["EdgeMiddleware", "as_response"]


def _validate(section: str, cfg: dict[str, Any]) -> None:
    from ._cello import validate_config

    validate_config(json.dumps({section: cfg}))


def _names(value: Iterable[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


class EdgeMiddleware:
    """Mixed into ``App``: CORS, compression, request ids, security headers, ETags, the access
    log layer and Python middleware."""

    _edge: dict[str, Any]
    _middleware: list[Callable[..., Any]]

    def _edge_sections(self) -> dict[str, Any]:
        edge = self.__dict__.get("_edge")
        if edge is None:
            edge = self.__dict__["_edge"] = {}
        return edge

    def enable_cors(
        self,
        origins: Iterable[str] | str | None = None,
        methods: Iterable[str] | str | None = None,
        headers: Iterable[str] | str | None = None,
        credentials: bool = False,
        max_age: int | None = None,
        expose_headers: Iterable[str] | str | None = None,
    ) -> None:
        """CORS answered in Rust: ``origins`` exact, ``"*"`` (the default) or patterns such as
        ``"https://*.example.com"``; preflights get 204 without reaching a route or Python.
        ``"*"`` with ``credentials=True`` is refused when the app starts."""
        cfg: dict[str, Any] = {"credentials": bool(credentials)}
        for key, value in (("origins", origins), ("methods", methods), ("headers", headers)):
            names = _names(value)
            if names is not None:
                cfg[key] = names
        if max_age is not None:
            cfg["maxAge"] = int(max_age)
        if expose_headers is not None:
            cfg["exposeHeaders"] = _names(expose_headers)
        # Everything but "*" with credentials is checked now; that one is refused at start-up
        # (as documented) with the same message, by the server's own validation.
        _validate("cors", {**cfg, "credentials": False})
        self._edge_sections()["cors"] = cfg

    def enable_compression(
        self, min_size: int | None = None, algorithms: Iterable[str] | str | None = None, level: int | None = None
    ) -> None:
        """gzip, br and zstd by ``Accept-Encoding`` q-values; bodies under ``min_size`` bytes
        (default 1024) are sent as they are."""
        cfg: dict[str, Any] = {}
        if min_size is not None:
            cfg["minSize"] = int(min_size)
        if algorithms is not None:
            cfg["algorithms"] = _names(algorithms)
        if level is not None:
            cfg["level"] = int(level)
        _validate("compression", cfg)
        self._edge_sections()["compression"] = cfg

    def enable_request_id(self, header_name: str = "X-Request-ID") -> None:
        """Propagate a valid incoming request id or generate a UUID; echoed on the response,
        ``request.request_id()``, in the access log and on the server span."""
        cfg = {"headerName": str(header_name)}
        _validate("requestId", cfg)
        self._edge_sections()["requestId"] = cfg

    def enable_security_headers(self, config: Any = None) -> None:
        """Security headers (``SecurityHeadersConfig``, default: its defaults) on every
        response; a header the handler sets itself wins. A ``CSP`` with the ``"nonce"`` source
        gets a fresh nonce per request (``request.csp_nonce()``)."""
        from .config import SecurityHeadersConfig

        if config is None:
            config = SecurityHeadersConfig()
        if not isinstance(config, SecurityHeadersConfig):
            raise TypeError(f"enable_security_headers() takes a SecurityHeadersConfig, not {type(config).__name__}")
        cfg = config._to_config()
        if isinstance(config.csp, str):
            raise TypeError("SecurityHeadersConfig.csp must be a CSP builder, not a str")
        _validate("securityHeaders", cfg)
        self._edge_sections()["securityHeaders"] = cfg

    def enable_etag(self) -> None:
        """Strong ETags for buffered bodies; ``If-None-Match``/``If-Modified-Since`` → 304,
        ``If-Match`` on unsafe methods → 412."""
        self._edge_sections()["etag"] = {}

    def enable_logging(self, exclude_paths: Iterable[str] | str | None = None, format: str | None = None) -> None:
        """The access log (``cello.access``, INFO) as a layer of the stack: ``exclude_paths``
        (exact paths, or prefixes ending in ``*``) are not logged; ``format`` is ``"common"``
        (default), ``"json"`` or a template such as ``"{method} {path} {status} {request_id}"``."""
        cfg: dict[str, Any] = {}
        if exclude_paths is not None:
            cfg["excludePaths"] = _names(exclude_paths)
        if format is not None:
            cfg["format"] = str(format)
        _validate("accessLogOptions", cfg)
        self._edge_sections()["accessLogOptions"] = cfg

    def _edge_config(self) -> dict[str, Any]:
        """The sections above, for ``server_config()``."""
        out = {k: dict(v) for k, v in self._edge_sections().items()}
        if "accessLogOptions" in out:
            out["accessLog"] = True
        return out

    # ---- Python middleware -----------------------------------------------------------------
    def use(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Add ``func(request, call_next)`` (sync or async) around every Python route. The first
        added is the outermost. It may answer itself (not calling ``call_next``), change the
        request context (``request.set_context``) or change the ``Response`` that
        ``call_next(request)`` returns (awaited in async middleware)."""
        if not callable(func):
            raise TypeError(f"middleware must be callable, got {func!r}")
        chain = self.__dict__.setdefault("_middleware", [])
        chain.append(func)
        return func

    def middleware(self, func: Any = None) -> Any:
        """Decorator form of ``use()``: ``@app.middleware`` (or ``@app.middleware("http")``)."""
        if func is None or isinstance(func, str):
            return self.use
        return self.use(func)

    def _wrap_endpoints(self, endpoints: list[Callable[..., Any]], handlers: list[Any]) -> list[Callable[..., Any]]:
        """Put the middleware chain and async exception handlers around each endpoint."""
        chain = list(self.__dict__.get("_middleware") or [])
        async_errors = any(_is_async(h) for h in getattr(self, "_exception_handlers", {}).values())
        if not chain and not async_errors:
            return endpoints
        out = []
        for endpoint, handler in zip(endpoints, handlers, strict=True):
            wrapped = endpoint
            is_async = _is_async(endpoint) or _is_async(handler)
            for mw in reversed(chain):
                wrapped, is_async = _link(self, mw, wrapped, is_async), is_async or _is_async(mw)
            if async_errors:
                wrapped = _guard(self, wrapped)
            out.append(wrapped)
        return out


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    # A callable object with ``async def __call__``.
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


def as_response(result: Any) -> Any:
    """A handler's return value as a ``Response`` (what ``call_next`` gives middleware)."""
    # The commonest results first: a dict (JSON) or a Response.
    if type(result) is dict:
        return Response.json(result)
    if isinstance(result, Response):
        return result
    if isinstance(result, ProblemDetails):
        return result.to_response()
    if isinstance(result, tuple) and len(result) in (2, 3):
        resp = as_response(result[0])
        resp.status = int(result[1])
        if len(result) == 3 and result[2]:
            items = result[2].items() if hasattr(result[2], "items") else result[2]
            for k, v in items:
                resp.set_header(k, v)
        return resp
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response.binary(bytes(result))
    if not isinstance(result, (str, dict, list)) and (hasattr(result, "__anext__") or hasattr(result, "__next__")):
        return Response.stream(result)
    return Response.json(result)


def _mapped(app: Any, request: Any, exc: Exception) -> Any:
    """What the exception mapping answers for ``exc`` (a ``Response`` or an awaitable of one),
    or ``None`` when nothing maps it (it then propagates: a 500 unless caught)."""
    from .errors import HTTPException, problem_body
    from .problems import ProblemDetails
    from .responses import Response

    handler = app._exception_handler_for(exc)
    if handler is not None:
        result = handler(request, exc)
        if inspect.isawaitable(result):

            async def later() -> Any:
                return as_response(await result)

            return later()
        return as_response(result)
    if isinstance(exc, ProblemDetails):
        return exc.to_response()
    if isinstance(exc, HTTPException):
        extra = getattr(exc, "extra", None) or {}
        body = problem_body(exc.status_code, exc.detail, request.path, **extra)
        resp = Response(body, status=exc.status_code, headers=exc.headers, content_type="application/problem+json")
        return resp
    return None


def _link(app: Any, mw: Callable[..., Any], nxt: Callable[..., Any], inner_async: bool) -> Callable[..., Any]:
    """``request -> result`` that runs ``mw`` with ``call_next`` bound to ``nxt``. Like
    Starlette's, ``call_next`` returns the mapped response for an exception the app maps
    (``HTTPException``, ``ProblemDetails``, ``@exception_handler``); others propagate."""
    if _is_async(mw):

        async def call_next_async(request: Any) -> Any:
            try:
                result = nxt(request)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                mapped = _mapped(app, request, exc)
                if mapped is None:
                    raise
                return (await mapped) if inspect.isawaitable(mapped) else mapped
            return as_response(result)

        def run_async(request: Any) -> Any:
            return mw(request, call_next_async)

        return run_async

    if not inner_async:

        def call_next(request: Any) -> Any:
            try:
                result = nxt(request)
            except Exception as exc:
                mapped = _mapped(app, request, exc)
                if mapped is None:
                    raise
                if inspect.isawaitable(mapped):
                    mapped.close()
                    raise
                return mapped
            if type(result) is dict:
                # as_response's commonest case (never awaitable): `Response.json(result)`
                # inlined, one Python frame less per request.
                resp = _object_new(Response)
                resp._status = None
                resp._headers = [_CT_JSON]
                resp._kind = 0
                resp._payload = None
                resp._file = None
                resp._body = _dumps(result)
                return resp
            if inspect.isawaitable(result):
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                raise TypeError("a sync middleware's call_next got an awaitable from a sync route")
            return as_response(result)

        def run(request: Any) -> Any:
            return mw(request, call_next)

        return run

    # A sync middleware around async code: it runs on a worker thread, and its call_next
    # hands the async rest of the chain back to the loop and waits for it.
    async def run_threaded(request: Any) -> Any:
        loop = asyncio.get_running_loop()

        async def rest(req: Any) -> Any:
            try:
                result = nxt(req)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                mapped = _mapped(app, req, exc)
                if mapped is None:
                    raise
                return (await mapped) if inspect.isawaitable(mapped) else mapped
            return as_response(result)

        def call_next_threaded(req: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(rest(req), loop).result()

        return await loop.run_in_executor(None, mw, request, call_next_threaded)

    return run_threaded


def _guard(app: Any, endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Await async exception handlers (sync ones are applied by the runtime as before)."""

    async def guarded(request: Any) -> Any:
        try:
            result = endpoint(request)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:
            handler = app._exception_handler_for(exc)
            if handler is None or not _is_async(handler):
                raise
            return await handler(request, exc)

    return guarded
