"""The orders worker: ``cello consume orders.worker:process`` (``--queue orders`` when deployed,
so the operator's binding names the Redis, the stream and the consumer group).

At least once: the message is acknowledged after ``process`` returns, and an exception retries
it (then the dead-letter stream ``<stream>:dead``), so ``process`` must be idempotent — marking
an order ``processed`` twice is harmless.
"""

from __future__ import annotations

from cello.database import Redis
from cello.messaging import Message, MessageResult, redis_consumer

from .settings import GROUP, PRICES, REDIS_URL, STREAM, order_key

store = Redis(REDIS_URL)


@redis_consumer(STREAM, group=GROUP, url=REDIS_URL, concurrency=8, max_retries=3)
async def process(message: Message):
    order = message.json()
    price = PRICES.get(order.get("item"))
    if price is None:
        # Not worth retrying: to the dead-letter stream with the reason.
        return MessageResult.DEAD_LETTER
    total = round(price * int(order["quantity"]), 2)
    await store.hset(order_key(order["id"]), mapping={"status": "processed", "total": total})
    return MessageResult.ACK
