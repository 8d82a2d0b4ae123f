"""``app.enable_grpc(config)`` and ``app.add_grpc_service(...)``: the app's ``GrpcServer``,
started on each worker's loop at startup (every worker binds the address with SO_REUSEPORT,
like the HTTP listener) and stopped at shutdown."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ._server import GrpcServer


def enable_grpc(app: Any, config: Any = None) -> GrpcServer:
    if getattr(app, "_grpc_server", None) is not None:
        raise RuntimeError("enable_grpc() was already called")
    server = GrpcServer(config)
    app._grpc_server = server

    async def start() -> None:
        # gRPC-Web on the gRPC listener answers CORS by the app's `enable_cors` settings.
        cors = app.__dict__.get("_edge", {}).get("cors")
        server._cors = None if cors is None else json.dumps(cors)
        await server.start()
        # The same services answer `application/grpc*` requests on the HTTP port.
        for core in _http_cores(app):
            core.set_grpc(server._core)

    async def stop() -> None:
        for core in _http_cores(app):
            core.set_grpc(None)
        await server.stop()

    app.on_event("startup")(start)
    app.on_event("shutdown")(stop)
    return server


def add_grpc_service(app: Any, service: Any, proto: Any = None) -> None:
    server = getattr(app, "_grpc_server", None)
    if server is None:
        server = enable_grpc(app)
    server.add_service(service, proto)


def _http_cores(app: Any) -> list[Any]:
    """The HTTP runtimes of the running loop's executor (server or TestClient)."""
    loop = asyncio.get_running_loop()
    return [ex.core for ex in list(app.__dict__.get("_live_executors", ())) if getattr(ex, "loop", None) is loop]
