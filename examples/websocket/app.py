"""A WebSocket chat room and a sync echo: `python examples/websocket/app.py`, then e.g.
`python -m websockets ws://127.0.0.1:8000/chat/lobby?name=ada`."""

from cello import App, Depends, WebSocket, WebSocketConfig

app = App()
app.set_websocket(WebSocketConfig(ping_interval=20, idle_timeout=60, max_message_size=64 * 1024))

rooms: dict[str, set[WebSocket]] = {}


def room_members(room: str) -> set[WebSocket]:
    return rooms.setdefault(room, set())


@app.websocket("/chat/{room}")
async def chat(ws: WebSocket, room: str, name: str = "anon", members=Depends(room_members)):
    await ws.accept(subprotocol="chat" if "chat" in ws.subprotocols else None)
    members.add(ws)
    try:
        async for msg in ws:
            for other in list(members):
                if other is not ws:
                    await other.send_json({"from": name, "text": msg.text})
    finally:
        members.discard(ws)


@app.websocket("/echo")
def echo(ws):
    # Sync style: runs on its own thread; recv() is None once the client closed.
    while (msg := ws.recv()) is not None:
        ws.send_text(msg if isinstance(msg, str) else msg.decode(errors="replace"))


if __name__ == "__main__":
    app.run()
