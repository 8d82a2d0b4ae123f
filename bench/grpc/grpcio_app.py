"""The peer of the gRPC figure: `inventory.v1.Inventory/GetItem` of examples/grpc on grpcio's
asyncio server (stubs compiled from the same `.proto` at startup with grpcio-tools).

    python bench/grpc/grpcio_app.py 127.0.0.1:50052
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import grpc
from grpc_tools import protoc

PROTO = Path(__file__).resolve().parents[2] / "examples" / "grpc" / "inventory.proto"
STOCK = {
    "A-1": {"sku": "A-1", "name": "anchor", "quantity": 3, "price": 19.5},
    "B-2": {"sku": "B-2", "name": "buoy", "quantity": 40, "price": 7.25},
    "C-3": {"sku": "C-3", "name": "cleat", "quantity": 1, "price": 4.0},
}


def stubs():
    out = tempfile.mkdtemp(prefix="grpc-bench-")
    protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={out}", f"--grpc_python_out={out}", str(PROTO)])
    sys.path.insert(0, out)
    import inventory_pb2
    import inventory_pb2_grpc

    return inventory_pb2, inventory_pb2_grpc


async def main(address: str) -> None:
    pb, pb_grpc = stubs()

    class Inventory(pb_grpc.InventoryServicer):
        async def GetItem(self, request, context):
            item = STOCK.get(request.sku)
            if item is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no item {request.sku!r}")
            await context.send_initial_metadata((("x-stock-version", "1"),))
            return pb.Item(**item)

    server = grpc.aio.server()
    pb_grpc.add_InventoryServicer_to_server(Inventory(), server)
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50052"))
