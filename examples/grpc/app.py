"""A gRPC service from a `.proto` with Cello: every call kind, errors and metadata.

`python examples/grpc/app.py` serves HTTP on :8000 and gRPC on 127.0.0.1:50051 (health and
reflection included), for example:

    grpcurl -plaintext -d '{"sku": "A-1"}' 127.0.0.1:50051 inventory.v1.Inventory/GetItem
"""

from __future__ import annotations

import os
from pathlib import Path

from cello import App, GrpcConfig
from cello.grpc import GrpcError, GrpcService, StatusCode, grpc_method

PROTO = Path(__file__).with_name("inventory.proto")

STOCK = {
    "A-1": {"sku": "A-1", "name": "anchor", "quantity": 3, "price": 19.5},
    "B-2": {"sku": "B-2", "name": "buoy", "quantity": 40, "price": 7.25},
    "C-3": {"sku": "C-3", "name": "cleat", "quantity": 1, "price": 4.0},
}


class Inventory(GrpcService):
    @grpc_method
    async def GetItem(self, request, context):
        item = STOCK.get(request["sku"])
        if item is None:
            raise GrpcError(StatusCode.NOT_FOUND, f"no item {request['sku']!r}")
        context.set_header("x-stock-version", "1")
        return item

    @grpc_method(stream=True)
    async def ListLowStock(self, request):
        for item in STOCK.values():
            if item["quantity"] < request["below"]:
                yield item

    @grpc_method(client_stream=True)
    async def Restock(self, requests):
        items = units = 0
        async for r in requests:
            if r["sku"] not in STOCK:
                raise GrpcError(StatusCode.INVALID_ARGUMENT, f"unknown sku {r['sku']!r}")
            STOCK[r["sku"]]["quantity"] += r["quantity"]
            items += 1
            units += r["quantity"]
        return {"items": items, "units": units}

    @grpc_method(stream=True, client_stream=True)
    async def PriceCheck(self, requests):
        async for r in requests:
            item = STOCK.get(r["sku"])
            if item is not None:
                yield item


app = App()
# GRPC_ADDRESS moves it (the tests use a free port).
app.enable_grpc(GrpcConfig(address=os.environ.get("GRPC_ADDRESS", "127.0.0.1:50051")))
app.add_grpc_service(Inventory(), proto=PROTO)


@app.get("/")
def index(request):
    return {"grpc": "127.0.0.1:50051", "services": ["inventory.v1.Inventory"]}


if __name__ == "__main__":
    app.run()
