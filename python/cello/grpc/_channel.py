"""``GrpcChannel``: calls to a gRPC server over HTTP/2 (hyper + tonic in Rust) — unary
(``call``), server streaming (``server_stream``), client streaming (``client_stream``) and
bidirectional (``bidi_stream``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable
from typing import Any

from ._service import BIDI, CLIENT_STREAM, SERVER_STREAM, UNARY, JsonCodec, _kind, load_proto, to_dict
from ._status import GrpcError, StatusCode, _pairs

_KIND_CALL = {
    UNARY: "call",
    SERVER_STREAM: "server_stream",
    CLIENT_STREAM: "client_stream",
    BIDI: "bidi_stream",
}


def _status_error(e: Exception) -> GrpcError:
    code, message = e.args
    return GrpcError(int(code), str(message))


class GrpcStream:
    """A streaming call: an async iterator of the response messages (``async for reply in
    stream``, or ``await stream.read()``, ``None`` at the end). A status other than OK raises
    ``GrpcError`` from the read that reaches it. For ``bidi_stream`` without ``requests``,
    ``await stream.write(message)`` sends and ``await stream.done_writing()`` ends the requests.
    ``cancel()`` (or leaving ``async with stream``) ends the call."""

    def __init__(self, core: Any, request_type: Any, response_type: Any) -> None:
        self._core = core
        self._req = request_type
        self._resp = response_type
        self._feeder: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def _feed(self, requests: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._feeder = asyncio.get_running_loop().create_task(self._send_all(requests))

    async def _send_all(self, requests: Iterable[Any] | AsyncIterable[Any]) -> None:
        from ..database import _executor

        try:
            if isinstance(requests, AsyncIterable):
                async for message in requests:
                    if not await self._core.send(_executor(), self._encode(message)):
                        return
            else:
                for message in requests:
                    if not await self._core.send(_executor(), self._encode(message)):
                        return
        except Exception as e:  # noqa: BLE001 - surfaced by the next read
            self._error = e
            self._core.cancel()
        finally:
            self._core.close_send()

    def _encode(self, message: Any) -> bytes:
        return self._req.encode(to_dict(message) if message is not None else {})

    async def write(self, message: Any) -> None:
        """Send one request message (waits while the stream is full)."""
        from ..database import _executor

        if self._feeder is not None:
            raise RuntimeError("this call sends the requests it was given: write() is for bidi_stream() without them")
        if not await self._core.send(_executor(), self._encode(message)):
            raise RuntimeError("the call has ended: read() gives its status")

    async def done_writing(self) -> None:
        """No more requests (the server sees the end of the client's stream)."""
        self._core.close_send()

    async def read(self) -> Any:
        """The next response message, or ``None`` once the server ended the stream with OK."""
        from .. import _cello
        from ..database import _executor

        try:
            raw = await self._core.recv(_executor())
        except _cello.GrpcStatusError as e:
            if self._error is not None:
                raise self._error from None
            raise _status_error(e) from None
        if raw is None:
            return None
        return self._resp.decode(raw)

    def cancel(self) -> None:
        """End the call now (the server sees CANCELLED)."""
        if self._feeder is not None:
            self._feeder.cancel()
        self._core.cancel()

    def __aiter__(self) -> GrpcStream:
        return self

    async def __anext__(self) -> Any:
        message = await self.read()
        if message is None:
            raise StopAsyncIteration
        return message

    async def __aenter__(self) -> GrpcStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.cancel()


class GrpcChannel:
    """``channel = await GrpcChannel.connect("host:port", proto=None)``, then
    ``await channel.call("package.Service", "Method", {...})`` (unary),
    ``channel.server_stream(service, method, request)`` and ``channel.bidi_stream(service,
    method, requests=None)`` (a ``GrpcStream`` to iterate), ``await channel.client_stream(
    service, method, requests)`` (``requests``: an iterable or async iterable of messages).
    With ``proto`` the messages are encoded per the ``.proto`` (and the call's kind is
    checked against it); without, they are JSON (the dict style). A status other than OK
    raises ``GrpcError``."""

    def __init__(self, target: str, proto: Any = None) -> None:
        from .. import _cello

        self.target = target
        self._schema = load_proto(proto) if proto is not None else None
        self._core = _cello.GrpcClient(target)
        self._types: dict[str, tuple[Any, Any, str]] = {}

    @classmethod
    async def connect(cls, target: str, proto: Any = None) -> GrpcChannel:
        return cls(target, proto)

    def _codecs(self, service: str, method: str, kind: str) -> tuple[Any, Any]:
        if self._schema is None:
            codec = JsonCodec()
            return codec, codec
        key = f"{service}/{method}"
        if key not in self._types:
            services = dict(self._schema.services())
            if service not in services:
                raise ValueError(f"the .proto has no service {service!r} (it has {sorted(services)})")
            for name, inp, out, client, server in services[service]:
                if name == method:
                    self._types[key] = (self._schema.message(inp), self._schema.message(out), _kind(client, server))
                    break
            else:
                raise ValueError(f"{service} has no method {method!r}")
        req, resp, declared = self._types[key]
        if declared != kind:
            raise ValueError(
                f"{service}.{method} is a {declared.replace('_', '-')} rpc in the .proto: "
                f"call it with channel.{_KIND_CALL[declared]}()"
            )
        return req, resp

    async def call(
        self, service: str, method: str, request: Any = None, *, timeout: float | None = None, metadata: Any = None
    ) -> Any:
        """One unary call: the response message."""
        from .. import _cello
        from ..database import _executor

        req_type, resp_type = self._codecs(service, method, UNARY)
        payload = req_type.encode(to_dict(request) if request is not None else {})
        try:
            raw = await self._core.call(_executor(), f"/{service}/{method}", payload, timeout, _pairs(metadata))
        except _cello.GrpcStatusError as e:
            raise _status_error(e) from None
        return resp_type.decode(raw)

    def _open(self, service: str, method: str, kind: str, timeout: float | None, metadata: Any) -> GrpcStream:
        req_type, resp_type = self._codecs(service, method, kind)
        core = self._core.open(f"/{service}/{method}", timeout, _pairs(metadata))
        return GrpcStream(core, req_type, resp_type)

    def server_stream(
        self, service: str, method: str, request: Any = None, *, timeout: float | None = None, metadata: Any = None
    ) -> GrpcStream:
        """One request, a stream of responses: ``async for reply in channel.server_stream(...)``."""
        stream = self._open(service, method, SERVER_STREAM, timeout, metadata)
        stream._feed([request])
        return stream

    async def client_stream(
        self,
        service: str,
        method: str,
        requests: Iterable[Any] | AsyncIterable[Any],
        *,
        timeout: float | None = None,
        metadata: Any = None,
    ) -> Any:
        """A stream of requests (iterable or async iterable), one response message."""
        stream = self._open(service, method, CLIENT_STREAM, timeout, metadata)
        stream._feed(requests)
        try:
            reply = await stream.read()
            if reply is None:
                raise GrpcError(StatusCode.INTERNAL, f"{service}.{method} ended without a response message")
            if await stream.read() is not None:
                raise GrpcError(StatusCode.INTERNAL, f"{service}.{method} sent more than one response message")
            return reply
        finally:
            stream.cancel()

    def bidi_stream(
        self,
        service: str,
        method: str,
        requests: Iterable[Any] | AsyncIterable[Any] | None = None,
        *,
        timeout: float | None = None,
        metadata: Any = None,
    ) -> GrpcStream:
        """Both ways at once: ``requests`` are sent as the responses come in; without it,
        ``await stream.write(message)`` / ``await stream.done_writing()``."""
        stream = self._open(service, method, BIDI, timeout, metadata)
        if requests is not None:
            stream._feed(requests)
        return stream

    async def close(self) -> None:
        """Nothing to release: connections close when the channel is dropped."""

    async def __aenter__(self) -> GrpcChannel:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
