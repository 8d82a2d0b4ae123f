"""``app.enable_grpc(config)`` and ``app.add_grpc_service(...)``: the app's ``GrpcServer``,
started on each worker's loop at startup (every worker binds the address with SO_REUSEPORT,
like the HTTP listener) and stopped at shutdown."""

from __future__ import annotations

from typing import Any

from ._server import GrpcServer


def enable_grpc(app: Any, config: Any = None) -> GrpcServer:
    if getattr(app, "_grpc_server", None) is not None:
        raise RuntimeError("enable_grpc() was already called")
    server = GrpcServer(config)
    app._grpc_server = server

    async def start() -> None:
        await server.start()

    async def stop() -> None:
        await server.stop()

    app.on_event("startup")(start)
    app.on_event("shutdown")(stop)
    return server


def add_grpc_service(app: Any, service: Any, proto: Any = None) -> None:
    server = getattr(app, "_grpc_server", None)
    if server is None:
        server = enable_grpc(app)
    server.add_service(service, proto)
