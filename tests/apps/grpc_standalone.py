"""A standalone `GrpcServer` (no App), driven over stdin for tests/integration/test_grpc_standalone.py.

Prints `port N` once serving, `started TAG` / `cancelled TAG` from the `Slow` handler.
Commands, one a line: `stop GRACE` (prints `stopped SECONDS`), `start` (serves again on the
same port, prints `port N`). `GRPC_KEEPALIVE` sets `keepalive_secs`."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from cello import GrpcConfig
from cello.grpc import GrpcServer, GrpcService, grpc_method

PROTO = Path(__file__).parent / "protos" / "greeter.proto"


class Greeter(GrpcService):
    @grpc_method
    async def SayHello(self, request):
        return {"message": f"Hello, {request['name']}!"}

    @grpc_method
    async def Slow(self, request):
        print(f"started {request['tag']}", flush=True)
        try:
            await asyncio.sleep(request["seconds"])
        except asyncio.CancelledError:
            print(f"cancelled {request['tag']}", flush=True)
            raise
        return {"message": f"done {request['tag']}"}


async def main() -> None:
    config = GrpcConfig(
        address=f"127.0.0.1:{os.environ.get('GRPC_PORT', '0')}",
        keepalive_secs=float(os.environ.get("GRPC_KEEPALIVE", "60")),
    )
    server = GrpcServer(config)
    server.add_service(Greeter(), proto=PROTO)
    _, port = await server.start()
    # The same port after a stop: the first one was picked by the OS.
    server.config = GrpcConfig(address=f"127.0.0.1:{port}", keepalive_secs=config.keepalive_secs)
    print(f"port {port}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = line.decode().split()
        if cmd[0] == "stop":
            started = time.monotonic()
            await server.stop(float(cmd[1]))
            print(f"stopped {time.monotonic() - started:.3f}", flush=True)
        elif cmd[0] == "start":
            _, port = await server.start()
            print(f"port {port}", flush=True)
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
