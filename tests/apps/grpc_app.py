"""gRPC test app (issue 17): a `.proto` service with every call kind, a JSON service without a
`.proto`, and the published `add_grpc_service(name, methods)` form, on `GRPC_PORT` beside the
HTTP port."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from cello import App, GrpcConfig
from cello.grpc import GrpcError, GrpcResponse, GrpcService, grpc_method

PROTO = Path(__file__).parent / "protos" / "greeter.proto"
EVENTS: list[str] = []


class Greeter(GrpcService):
    @grpc_method
    async def SayHello(self, request):
        return {
            "message": f"Hello, {request['name']}!",
            "tags": request["tags"],
            "scores": request["scores"],
            "blob": request["blob"],
            "mood": request["mood"],
            "big": request["big"],
        }

    @grpc_method
    async def Fail(self, request):
        raise GrpcError(request["code"], request["message"], details=b"\x08\x05", metadata={"why": "asked"})

    @grpc_method
    async def Slow(self, request):
        try:
            await asyncio.sleep(request["seconds"])
        except asyncio.CancelledError:
            EVENTS.append(f"cancelled:{request['tag']}")
            raise
        EVENTS.append(f"done:{request['tag']}")
        return {"message": "done"}

    @grpc_method
    async def Echo(self, request, context):
        context.set_header("x-echo", context.metadata.get("x-token", "none"))
        context.set_trailer("x-trailer", "bye")
        data = context.metadata.get("x-data-bin", b"")
        return GrpcResponse({"message": request["name"], "blob": data}, trailers={"x-extra-bin": b"\x01\x02"})

    @grpc_method(stream=True)
    async def CountTo(self, request):
        for i in range(1, request["to"] + 1):
            yield {"n": i}

    @grpc_method(client_stream=True)
    async def Sum(self, requests):
        total = count = 0
        async for r in requests:
            total += r["n"]
            count += 1
        return {"sum": total, "count": count}

    @grpc_method(stream=True, client_stream=True)
    async def Chat(self, requests):
        async for r in requests:
            yield {"message": f"echo {r['name']}"}

    @grpc_method
    def Events(self, request):
        return {"events": EVENTS}


class Plain(GrpcService):
    """The dict style without a `.proto`: JSON messages."""

    name = "cello.test.Plain"

    @grpc_method
    async def Upper(self, request):
        return {"text": request["text"].upper()}

    @grpc_method(stream=True)
    async def Letters(self, request):
        for ch in request["text"]:
            yield {"letter": ch}


app = App()
app.enable_grpc(
    GrpcConfig(
        address=f"127.0.0.1:{os.environ['GRPC_PORT']}",
        enable_web=True,
        max_message_size=1024 * 1024,
        concurrency_limit=int(os.environ.get("GRPC_CONCURRENCY", "100")),
    )
)
if os.environ.get("GRPC_CORS"):
    # gRPC-Web CORS by the app's settings (test_grpc_web_cors_follows_the_apps_cors).
    app.enable_cors(origins=[os.environ["GRPC_CORS"]], credentials=True, max_age=600, expose_headers=["x-custom"])
app.add_grpc_service(Greeter(), proto=PROTO)
app.add_grpc_service(Plain())
app.add_grpc_service("cello.test.Published", {"Ping": lambda request: {"pong": request.get("n", 0) + 1}})


@app.get("/")
def index(request):
    return {"ok": True}


if __name__ == "__main__":
    app.run()
