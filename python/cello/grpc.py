"""``cello.grpc``: gRPC services over HTTP/2 — built by issue 17.

The names exist so published apps import; using them raises ``FeatureNotAvailable``.
"""

from ._unavailable import FeatureNotAvailable, install

__all__ = [
    "FeatureNotAvailable",
    *install(
        globals(),
        17,
        ["GrpcService", "GrpcServer", "GrpcChannel", "GrpcRequest", "GrpcResponse", "GrpcError"],
        ["grpc_method"],
    ),
]
