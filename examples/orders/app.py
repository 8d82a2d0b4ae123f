"""The orders API: ``POST /orders`` stores the order as ``pending`` and publishes it to the
Redis stream; the worker (``worker.py``, run by ``cello consume``) prices it and marks it
``processed``; ``GET /orders/{id}`` shows where it is.

    cello run orders.app:app                     # from examples/, Redis on 127.0.0.1:6379
    cello consume orders.worker:process          # in a second shell

    curl -XPOST localhost:8000/orders -d '{"item": "mug", "quantity": 2}'
    curl localhost:8000/orders/<id>
"""

from __future__ import annotations

import asyncio
import uuid

from cello import App, HTTPException, Request
from cello.config import RedisConfig
from cello.messaging import Producer

from .settings import PRICES, REDIS_URL, STREAM, order_key

app = App()
redis = app.enable_redis(RedisConfig(url=REDIS_URL))
_producer: Producer | None = None
_lock = asyncio.Lock()


async def producer() -> Producer:
    """One producer per worker process, connected on first use."""
    global _producer
    async with _lock:
        if _producer is None:
            _producer = await Producer.connect(RedisConfig(url=REDIS_URL))
    return _producer


@app.post("/orders")
async def place_order(request: Request):
    body = request.json()
    item, quantity = body.get("item"), body.get("quantity", 1)
    if item not in PRICES:
        raise HTTPException(422, f"unknown item {item!r}; one of {sorted(PRICES)}")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 100:
        raise HTTPException(422, "quantity must be an integer from 1 to 100")
    order_id = uuid.uuid4().hex
    # Stored before it is published: the worker may finish before this handler returns.
    await redis.hset(order_key(order_id), mapping={"status": "pending", "item": item, "quantity": quantity})
    p = await producer()
    message_id = await p.send(STREAM, {"id": order_id, "item": item, "quantity": quantity}, key=order_id)
    return {"id": order_id, "status": "pending", "message_id": message_id}, 202


@app.get("/orders/{order_id}")
async def get_order(request: Request, order_id: str):
    order = await redis.hgetall(order_key(order_id))
    if not order:
        raise HTTPException(404, "no such order")
    order["quantity"] = int(order["quantity"])
    if "total" in order:
        order["total"] = float(order["total"])
    return {"id": order_id, **order}
