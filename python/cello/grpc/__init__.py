"""``cello.grpc``: gRPC services over HTTP/2 (hyper + tonic in Rust), handlers on the worker's
asyncio loop. See docs/grpc.md.

``GrpcService``, ``@grpc_method``, ``GrpcServer``, ``GrpcChannel`` (unary and the three
streaming kinds, a ``GrpcStream`` per streaming call), ``GrpcRequest``, ``GrpcResponse``, ``GrpcError``/``StatusCode``.
"""

from ..errors import FeatureNotAvailable
from ._channel import GrpcChannel, GrpcStream
from ._server import GrpcServer
from ._service import GrpcRequest, GrpcResponse, GrpcService, grpc_method
from ._status import GrpcError, StatusCode

__all__ = [
    "FeatureNotAvailable",
    "GrpcChannel",
    "GrpcError",
    "GrpcRequest",
    "GrpcResponse",
    "GrpcServer",
    "GrpcService",
    "GrpcStream",
    "StatusCode",
    "grpc_method",
]
