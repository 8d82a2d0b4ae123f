"""A small HTTP/3 client over aioquic, for the HTTP/3 tests: one QUIC connection, requests as
coroutines, and the connection's close frame kept for inspection."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset


@dataclass
class H3Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: int = 0
    reset: int | None = None


class H3Protocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting: dict[int, tuple[asyncio.Future, H3Response]] = {}
        self.terminated: ConnectionTerminated | None = None
        self.closed_event = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
            self.closed_event.set()
            for fut, _ in self.waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"connection closed: {event.error_code:#x}"))
        if isinstance(event, StreamReset) and event.stream_id in self.waiting:
            fut, resp = self.waiting.pop(event.stream_id)
            resp.reset = event.error_code
            if not fut.done():
                fut.set_result(resp)
        for h3_event in self.h3.handle_event(event):
            sid = getattr(h3_event, "stream_id", None)
            if sid not in self.waiting:
                continue
            fut, resp = self.waiting[sid]
            if isinstance(h3_event, HeadersReceived):
                hdrs = {k.decode(): v.decode() for k, v in h3_event.headers}
                if not resp.status:
                    resp.status = int(hdrs.pop(":status"))
                resp.headers.update(hdrs)
            elif isinstance(h3_event, DataReceived) and h3_event.data:
                resp.body += h3_event.data
                resp.chunks += 1
            if getattr(h3_event, "stream_ended", False) and self.waiting.pop(sid) and not fut.done():
                fut.set_result(resp)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, authority="localhost"
    ) -> H3Response:
        sid = self._quic.get_next_available_stream_id()
        hdrs = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
                (b":path", path.encode())]  # fmt: skip
        hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if body:
            hdrs.append((b"content-length", str(len(body)).encode()))
        self.h3.send_headers(sid, hdrs, end_stream=not body)
        if body:
            self.h3.send_data(sid, body, end_stream=True)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[sid] = (fut, H3Response())
        self.transmit()
        return await fut


def configuration(cafile: str | None = None, verify: bool = True) -> QuicConfiguration:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    if cafile:
        cfg.load_verify_locations(cafile)
    if not verify:
        cfg.verify_mode = ssl.CERT_NONE
    return cfg


def h3_connect(host: str, port: int, cafile: str):
    """`async with h3_connect(...) as proto:`; `proto.request(...)`."""
    return connect(host, port, configuration=configuration(cafile), create_protocol=H3Protocol)
