"""``GrpcChannel``: unary calls to a gRPC server over HTTP/2 (hyper + tonic in Rust)."""

from __future__ import annotations

from typing import Any

from ._service import JsonCodec, load_proto, to_dict
from ._status import GrpcError, _pairs


class GrpcChannel:
    """``channel = await GrpcChannel.connect("host:port", proto=None)``, then
    ``await channel.call("package.Service", "Method", {...})``. With ``proto`` the messages
    are encoded per the ``.proto``; without, they are JSON (the dict style). A status other
    than OK raises ``GrpcError``."""

    def __init__(self, target: str, proto: Any = None) -> None:
        from .. import _cello

        self.target = target
        self._schema = load_proto(proto) if proto is not None else None
        self._core = _cello.GrpcClient(target)
        self._types: dict[str, tuple[Any, Any]] = {}

    @classmethod
    async def connect(cls, target: str, proto: Any = None) -> GrpcChannel:
        return cls(target, proto)

    def _codecs(self, service: str, method: str) -> tuple[Any, Any]:
        if self._schema is None:
            codec = JsonCodec()
            return codec, codec
        key = f"{service}/{method}"
        if key not in self._types:
            services = dict(self._schema.services())
            if service not in services:
                raise ValueError(f"the .proto has no service {service!r} (it has {sorted(services)})")
            for name, inp, out, _client, _server in services[service]:
                if name == method:
                    self._types[key] = (self._schema.message(inp), self._schema.message(out))
                    break
            else:
                raise ValueError(f"{service} has no method {method!r}")
        return self._types[key]

    async def call(
        self, service: str, method: str, request: Any = None, *, timeout: float | None = None, metadata: Any = None
    ) -> Any:
        from .. import _cello
        from ..database import _executor

        req_type, resp_type = self._codecs(service, method)
        payload = req_type.encode(to_dict(request) if request is not None else {})
        try:
            raw = await self._core.call(_executor(), f"/{service}/{method}", payload, timeout, _pairs(metadata))
        except _cello.GrpcStatusError as e:
            code, message = e.args
            raise GrpcError(int(code), str(message)) from None
        return resp_type.decode(raw)

    async def close(self) -> None:
        """Nothing to release: connections close when the channel is dropped."""

    async def __aenter__(self) -> GrpcChannel:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
