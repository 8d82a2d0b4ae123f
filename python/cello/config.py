"""Configuration classes. Each is a view over a ``cello-config`` Rust type: the
data plane validates the same fields again when the app starts."""

from __future__ import annotations

from typing import Any


class _Config:
    """Keyword-only fields with defaults; ``_to_config`` gives the Rust field names."""

    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def _to_config(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self._fields}


class TimeoutConfig(_Config):
    _fields = ("read_header", "read_body", "write", "idle", "handler")

    def __init__(self, read_header=5, read_body=30, write=30, idle=60, handler=30) -> None:
        self.read_header, self.read_body, self.write, self.idle, self.handler = (
            read_header, read_body, write, idle, handler)  # fmt: skip

    read_header_timeout = property(lambda s: s.read_header, lambda s, v: setattr(s, "read_header", v))
    read_body_timeout = property(lambda s: s.read_body, lambda s, v: setattr(s, "read_body", v))
    write_timeout = property(lambda s: s.write, lambda s, v: setattr(s, "write", v))
    idle_timeout = property(lambda s: s.idle, lambda s, v: setattr(s, "idle", v))
    handler_timeout = property(lambda s: s.handler, lambda s, v: setattr(s, "handler", v))


class LimitsConfig(_Config):
    _fields = ("max_header_size", "max_body_size", "max_connections", "max_requests_per_connection")

    def __init__(self, max_header_size=8192, max_body_size=10485760, max_connections=10000,
                 max_requests_per_connection=1000) -> None:  # fmt: skip
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.max_connections = max_connections
        self.max_requests_per_connection = max_requests_per_connection


class ThreadPoolConfig(_Config):
    _fields = ("size", "offload_threshold_ms", "adaptive")

    def __init__(self, size=64, offload_threshold_ms=1, adaptive=True) -> None:
        self.size, self.offload_threshold_ms, self.adaptive = size, offload_threshold_ms, adaptive


class Http2Config(_Config):
    _fields = ("max_concurrent_streams", "initial_window_size", "max_frame_size", "enable_push")

    def __init__(self, max_concurrent_streams=100, initial_window_size=1048576, max_frame_size=16384,
                 enable_push=False) -> None:  # fmt: skip
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window_size = initial_window_size
        self.max_frame_size = max_frame_size
        self.enable_push = enable_push
