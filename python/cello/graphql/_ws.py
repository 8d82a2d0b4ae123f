"""GraphQL subscriptions over WebSocket: the ``graphql-transport-ws`` protocol (the current one,
of the ``graphql-ws`` library) and the legacy ``graphql-ws`` one (subscriptions-transport-ws),
chosen by the subprotocol the client offers.

Each operation runs in a task of its own; a send waits while the connection's send queue is
full, so a slow client pushes back on the resolver's generator instead of losing messages.
When the client stops an operation or leaves, its task is cancelled, which closes the
resolver's async generator (its ``finally`` runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from ..websocket import WebSocket, WebSocketDisconnect
from ._engine import GraphQL

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
INIT_TIMEOUT = 10.0


def install(app: Any, gql: GraphQL, paths: list[str], limits: dict[str, Any]) -> None:
    async def graphql_ws(ws: WebSocket) -> None:
        offered = list(ws.subprotocols)
        if TRANSPORT_WS in offered:
            proto = TRANSPORT_WS
        elif LEGACY_WS in offered:
            proto = LEGACY_WS
        else:
            # RFC 6455: no common subprotocol; graphql-ws closes with 4406 after accepting.
            await ws.accept()
            await ws.close(4406, "Subprotocol not acceptable")
            return
        await ws.accept(proto)
        await _Session(ws, gql, proto, limits).serve()

    # The first path is GraphQL's own (a GET with `Upgrade: websocket` goes to the WebSocket
    # route, other GETs to the HTTP endpoint); the others are aliases.
    for i, path in enumerate(paths):
        app.websocket(path, name="graphql_ws" if i == 0 else f"graphql_ws_{i}")(graphql_ws)


class _Session:
    def __init__(self, ws: Any, gql: GraphQL, proto: str, limits: dict[str, Any]) -> None:
        self.ws = ws
        self.gql = gql
        self.legacy = proto == LEGACY_WS
        self.limits = limits
        self.ops: dict[str, asyncio.Task[None]] = {}
        self.acked = False
        self.send_lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(message, separators=(",", ":")))

    async def serve(self) -> None:
        try:
            await self._loop()
        except WebSocketDisconnect:
            pass
        finally:
            tasks = list(self.ops.values())
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t

    async def _receive(self) -> dict[str, Any] | None:
        text = await self.ws.receive_text()
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            await self.ws.close(4400, "Invalid message received")
            return None
        return msg

    async def _loop(self) -> None:
        if not self.legacy:
            try:
                first = await asyncio.wait_for(self._receive(), INIT_TIMEOUT)
            except asyncio.TimeoutError:
                await self.ws.close(4408, "Connection initialisation timeout")
                return
            if first is None:
                return
            await self._handle(first)
        while not self.ws.closed:
            msg = await self._receive()
            if msg is None:
                return
            await self._handle(msg)

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "connection_init":
            if self.acked and not self.legacy:
                await self.ws.close(4429, "Too many initialisation requests")
                return
            self.acked = True
            await self.send({"type": "connection_ack"})
            if self.legacy:
                await self.send({"type": "ka"})
            return
        if self.legacy:
            if kind == "start":
                await self._start(msg)
            elif kind == "stop":
                self._stop(msg.get("id"))
            elif kind == "connection_terminate":
                await self.ws.close(1000)
            else:
                await self.send({"type": "error", "id": msg.get("id"), "payload": {"message": f"unknown type {kind}"}})
            return
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            if not self.acked:
                await self.ws.close(4401, "Unauthorized")
                return
            await self._start(msg)
        elif kind == "complete":
            self._stop(msg.get("id"))
        else:
            await self.ws.close(4400, f"Unknown message type {kind!r}")

    async def _start(self, msg: dict[str, Any]) -> None:
        op_id, payload = msg.get("id"), msg.get("payload")
        if not isinstance(op_id, str) or not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            await self.ws.close(4400, "Invalid subscribe message")
            return
        if op_id in self.ops:
            if self.legacy:
                self._stop(op_id)
            else:
                await self.ws.close(4409, f"Subscriber for {op_id} already exists")
                return
        variables = payload.get("variables")
        if variables is not None and not isinstance(variables, dict):
            await self.ws.close(4400, "variables must be an object")
            return
        task = asyncio.get_running_loop().create_task(
            self._run(op_id, payload["query"], variables, payload.get("operationName"))
        )
        self.ops[op_id] = task
        task.add_done_callback(lambda t: self.ops.pop(op_id, None) if self.ops.get(op_id) is t else None)

    def _stop(self, op_id: Any) -> None:
        task = self.ops.pop(op_id, None) if isinstance(op_id, str) else None
        if task is not None:
            task.cancel()

    async def _run(self, op_id: str, query: str, variables: Any, operation_name: Any) -> None:
        data_type = "data" if self.legacy else "next"
        context = {"request": self.ws.request, "websocket": self.ws}
        try:
            result = await self.gql.subscribe(query, variables, operation_name, context=context, **self.limits)
            if isinstance(result, dict):
                if "data" not in result and result.get("errors"):
                    # Nothing ran (invalid document): an "error" message with the GraphQL errors.
                    errors = result["errors"]
                    await self.send({"type": "error", "id": op_id, "payload": errors[0] if self.legacy else errors})
                    return
                await self.send({"type": data_type, "id": op_id, "payload": result})
            else:
                try:
                    async for item in result:
                        await self.send({"type": data_type, "id": op_id, "payload": item})
                finally:
                    await result.aclose()  # type: ignore[attr-defined]
            await self.send({"type": "complete", "id": op_id})
        except (WebSocketDisconnect, ConnectionError):
            pass
