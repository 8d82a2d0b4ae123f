"""``GrpcServer``: a gRPC listener (Rust: hyper + tonic) whose handlers run on the asyncio loop
it is started on, and the dispatcher that gives each call kind its shape."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from ._service import (
    CLIENT_STREAM,
    SERVER_STREAM,
    UNARY,
    GrpcRequest,
    GrpcResponse,
    Method,
    _decode,
    methods_of,
    methods_of_mapping,
    requests_of,
    to_dict,
)
from ._status import GrpcError, StatusCode

log = logging.getLogger("cello.grpc")


def _encode(method: Method, value: Any) -> bytes:
    try:
        return method.response.encode(value if isinstance(value, dict) else to_dict(value))
    except (ValueError, TypeError) as e:
        # The handler's answer does not fit its message type: a server bug.
        raise GrpcError(StatusCode.INTERNAL, f"bad response from {method.path}: {e}") from None


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _run(call: Any, method: Method, ctx: GrpcRequest) -> None:
    args: list[Any]
    if method.kind in (UNARY, SERVER_STREAM):
        raw = await call.recv()
        if raw is None:
            raise GrpcError(StatusCode.INVALID_ARGUMENT, f"{method.path} takes one request message")
        ctx.message = _decode(method, raw)
        args = [ctx.message]
    else:
        args = [requests_of(call, method)]
    if method.with_context:
        args.append(ctx)
    result = method.handler(*args)
    if method.kind in (UNARY, CLIENT_STREAM):
        value = await _maybe_await(result)
        if isinstance(value, GrpcResponse):
            if value.headers:
                call.set_headers(value.headers)
            ctx._trailers.extend(value.trailers)
            value = value.message
        if value is None:
            raise GrpcError(StatusCode.INTERNAL, f"{method.path} returned no message")
        await call.send(_encode(method, value))
        return
    if not hasattr(result, "__aiter__"):
        if inspect.isawaitable(result):
            result = await result
        if not hasattr(result, "__aiter__") and not hasattr(result, "__iter__"):
            raise GrpcError(StatusCode.INTERNAL, f"{method.path} streams: its handler must be an async generator")
    if hasattr(result, "__aiter__"):
        async for item in result:
            await call.send(_encode(method, item))
    else:
        for item in result:
            await call.send(_encode(method, item))


class GrpcServer:
    """A gRPC server: ``add_service(service, proto=None)``, then ``await start()`` on the loop
    the handlers should run on (``app.enable_grpc`` does this in every worker)."""

    def __init__(self, config: Any = None) -> None:
        from ..config import GrpcConfig

        if config is None:
            config = GrpcConfig()
        elif not isinstance(config, GrpcConfig):
            raise TypeError(f"GrpcServer takes a GrpcConfig, not {type(config).__name__}")
        self.config = config
        self._methods: dict[str, Method] = {}
        self._schemas: list[Any] = []
        self._services: list[str] = []
        self._core: Any = None
        # The app's CORS section (JSON) for gRPC-Web on this listener: set by enable_grpc.
        self._cors: str | None = None

    # ---- services ----------------------------------------------------------------------
    def add_service(self, service: Any, proto: Any = None, methods: Any = None) -> None:
        """A ``GrpcService`` instance (messages from ``proto`` when given, else JSON), or the
        published form ``add_service("pkg.Service", {"Method": handler})``."""
        if self._core is not None:
            raise RuntimeError("add services before the server starts")
        if isinstance(service, str):
            if proto is not None and methods is None and hasattr(proto, "items"):
                proto, methods = None, proto
            if proto is not None:
                raise TypeError("the add_grpc_service(name, methods) form speaks JSON: no proto")
            name, found, schema = service, methods_of_mapping(service, methods), None
        else:
            name, found, schema = methods_of(service, proto)
        if name in self._services:
            raise ValueError(f"the gRPC service {name} is added twice")
        self._services.append(name)
        if schema is not None and schema not in self._schemas:
            self._schemas.append(schema)
        for m in found:
            self._methods[m.path] = m

    @property
    def services(self) -> list[str]:
        return list(self._services)

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        """Bind ``config.address`` and serve on the running loop; returns ``(host, port)``."""
        from .. import _cello

        if self._core is not None:
            raise RuntimeError("the gRPC server is already started")
        c = self.config
        if not self._methods:
            raise RuntimeError("the gRPC server has no service: add_service() first")
        loop = asyncio.get_running_loop()
        reflection = [s.encoded() for s in self._schemas] if c.reflection else None
        self._core = _cello.GrpcCore.start(
            loop,
            self._dispatch,
            c.address,
            max_message_size=int(c.max_message_size),
            concurrency_limit=int(c.concurrency_limit),
            keepalive_secs=float(c.keepalive_secs),
            enable_web=bool(c.enable_web),
            reflection=reflection,
            health=list(self._services),
            cors=self._cors,
        )
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        if self._core is None:
            raise RuntimeError("the gRPC server is not started")
        return tuple(self._core.address)  # type: ignore[return-value]

    @property
    def port(self) -> int:
        return self.address[1]

    async def stop(self, grace: float = 5.0) -> None:
        """Close the listener at once (the port is free), let calls in flight finish within
        ``grace`` seconds, then cancel them. The server can be started again."""
        core, self._core = self._core, None
        if core is None:
            return
        try:
            await core.stop(grace)
        finally:
            core.close()

    async def __aenter__(self) -> GrpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ---- calls ---------------------------------------------------------------------------
    async def _dispatch(self, call: Any) -> None:
        from .._cello import GrpcStatusError

        call.attach(asyncio.current_task())
        method = self._methods.get(call.path)
        if method is None:
            call.finish(int(StatusCode.UNIMPLEMENTED), f"unknown method {call.path}")
            return
        ctx = GrpcRequest(call, call.path, method.service)
        try:
            await _run(call, method, ctx)
        except GrpcError as e:
            call.finish(int(e.code), e.message, e.details, ctx._trailers + e.metadata)
            return
        except GrpcStatusError as e:
            code, message = e.args
            call.finish(int(code), str(message))
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("gRPC handler %s failed", call.path)
            call.finish(int(StatusCode.UNKNOWN), f"Exception calling application: {type(e).__name__}")
            return
        call.finish(0, "", None, ctx._trailers)
