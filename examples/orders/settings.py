"""Where the orders live: one Redis for the order stream and the order status.

Deployed by the operator, the CellApp's queue binding ``orders`` (a Redis stream) gives the
address, password, stream and consumer group through ``CELLO_QUEUE_ORDERS_*`` — the API reads
them here, ``cello consume orders.worker:process --queue orders`` applies them to the consumer.
Run locally, Redis on 127.0.0.1:6379 and the stream ``orders`` (``ORDERS_REDIS_URL``,
``ORDERS_STREAM`` and ``ORDERS_PREFIX`` override them; the tests use the latter two).
"""

from __future__ import annotations

import os

from cello.bindings import queue_bindings

BINDING = queue_bindings().get("orders")

if BINDING is not None:
    _auth = f":{BINDING.password}@" if BINDING.password else ""
    REDIS_URL = f"redis://{_auth}{BINDING.address}"
    STREAM = BINDING.stream or "orders"
    GROUP = BINDING.group or "orders-worker"
else:
    REDIS_URL = os.environ.get("ORDERS_REDIS_URL", "redis://127.0.0.1:6379")
    STREAM = os.environ.get("ORDERS_STREAM", "orders")
    GROUP = "orders-worker"

# Status hashes are `<PREFIX>order:<id>`.
PREFIX = os.environ.get("ORDERS_PREFIX", "orders:")

PRICES = {"mug": 12.0, "tea": 4.5, "pot": 30.0}


def order_key(order_id: str) -> str:
    return f"{PREFIX}order:{order_id}"
