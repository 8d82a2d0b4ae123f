"""``cello.grpc``: gRPC services over HTTP/2 (hyper + tonic in Rust), handlers on the worker's
asyncio loop. See docs/grpc.md.

Built: ``GrpcService``, ``@grpc_method``, ``GrpcServer``, ``GrpcRequest``, ``GrpcResponse``,
``GrpcError``/``StatusCode``. ``GrpcChannel`` (the client) still raises ``FeatureNotAvailable``.
"""

from .._unavailable import FeatureNotAvailable, install
from ._server import GrpcServer
from ._service import GrpcRequest, GrpcResponse, GrpcService, grpc_method
from ._status import GrpcError, StatusCode

__all__ = [
    "FeatureNotAvailable",
    "GrpcError",
    "GrpcRequest",
    "GrpcResponse",
    "GrpcServer",
    "GrpcService",
    "StatusCode",
    "grpc_method",
    *install(globals(), 17, ["GrpcChannel"]),
]
