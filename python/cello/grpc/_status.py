"""gRPC status codes and ``GrpcError``."""

from __future__ import annotations

import enum
from typing import Any


class StatusCode(enum.IntEnum):
    """The 17 gRPC status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def status_code(code: Any) -> StatusCode:
    """A ``StatusCode`` from itself, its number or its name (any case)."""
    if isinstance(code, StatusCode):
        return code
    if isinstance(code, str):
        try:
            return StatusCode[code.upper()]
        except KeyError:
            raise ValueError(f"unknown gRPC status code {code!r}") from None
    try:
        return StatusCode(int(code))
    except (TypeError, ValueError):
        raise ValueError(f"unknown gRPC status code {code!r} (0..16)") from None


class _Codes(type):
    # ``GrpcError.NOT_FOUND`` is ``StatusCode.NOT_FOUND``.
    def __getattr__(cls, name: str) -> StatusCode:
        try:
            return StatusCode[name]
        except KeyError:
            raise AttributeError(name) from None


class GrpcError(Exception, metaclass=_Codes):
    """End a call with a status: ``raise GrpcError(StatusCode.NOT_FOUND, "no such user")``.

    ``details`` are the binary status details (``grpc-status-details-bin``, e.g. an encoded
    ``google.rpc.Status``); ``metadata`` are trailing metadata pairs sent with the status.
    """

    def __init__(
        self,
        code: Any = StatusCode.UNKNOWN,
        message: str = "",
        details: bytes | None = None,
        metadata: Any = None,
    ) -> None:
        self.code = status_code(code)
        if self.code == StatusCode.OK:
            raise ValueError("GrpcError needs an error code, not OK")
        self.message = str(message)
        self.details = details
        self.metadata = _pairs(metadata)
        super().__init__(f"{self.code.name}: {self.message}" if self.message else self.code.name)

    def __repr__(self) -> str:
        return f"GrpcError({self.code.name}, {self.message!r})"


def _pairs(metadata: Any) -> list[tuple[str, Any]]:
    if not metadata:
        return []
    items = metadata.items() if hasattr(metadata, "items") else metadata
    return [(str(k).lower(), v) for k, v in items]
