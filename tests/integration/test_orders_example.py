"""Issue 15: examples/orders as two real processes — ``cello run orders.app:app`` (the API
publishes with ``Producer``) and ``cello consume orders.worker:process`` (the consumer) — with
the local Redis (127.0.0.1:6379) between them; an order placed over HTTP is seen processed."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis as redis_py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port
from db_helpers import REDIS_URL, require

__all__ = ["cello_procs"]
pytestmark = pytest.mark.timeout(90)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def env():
    require(6379, "Redis")
    prefix = f"orderstest:{uuid.uuid4().hex[:10]}:"
    yield {"ORDERS_REDIS_URL": REDIS_URL, "ORDERS_STREAM": prefix + "orders", "ORDERS_PREFIX": prefix}
    r = redis_py.Redis.from_url(REDIS_URL)
    for k in r.scan_iter(prefix + "*"):
        r.delete(k)
    r.close()


def start_worker(cello_procs, env):
    admin = free_port()
    w = cello_procs.start(["consume", "orders.worker:process", "--admin-port", str(admin)], cwd=EXAMPLES, env=env,
                          port=admin)  # fmt: skip
    assert w.wait_http("/health/ready", timeout=30).status_code == 200, w.log()
    return w


def order_status(api, order_id, want, timeout=20.0):
    deadline = time.monotonic() + timeout
    order = None
    while time.monotonic() < deadline:
        order = httpx.get(api.url(f"/orders/{order_id}"), timeout=5).json()
        if order.get("status") == want:
            return order
        time.sleep(0.05)
    pytest.fail(f"order {order_id} not {want} within {timeout} s: {order}\n{api.log()[-2000:]}")


def test_an_order_placed_over_http_is_processed_by_the_consumer(cello_procs, env):
    worker = start_worker(cello_procs, env)
    port = free_port()
    api = cello_procs.start(["run", "orders.app:app", "--port", str(port)], cwd=EXAMPLES, env=env, port=port)
    assert api.wait_http("/health/ready", timeout=30).status_code == 200, api.log()

    r = httpx.post(api.url("/orders"), json={"item": "mug", "quantity": 2}, timeout=10)
    assert r.status_code == 202, r.text
    placed = r.json()
    assert placed["status"] == "pending" and placed["message_id"]
    order = order_status(api, placed["id"], "processed")
    assert order == {"id": placed["id"], "status": "processed", "item": "mug", "quantity": 2, "total": 24.0}

    # Bad input never reaches the stream.
    assert httpx.post(api.url("/orders"), json={"item": "car"}, timeout=10).status_code == 422
    assert httpx.get(api.url("/orders/nope"), timeout=10).status_code == 404

    # The worker counted it on its admin port.
    metrics = httpx.get(worker.url("/metrics"), timeout=5).text
    acked = [line for line in metrics.splitlines() if line.startswith("cello_messaging_messages_acked_total")]
    assert acked and float(acked[0].rsplit(" ", 1)[1]) >= 1, metrics

    # Orders placed while the worker is down wait in the stream and are processed on restart.
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()
    ids = [httpx.post(api.url("/orders"), json={"item": "tea", "quantity": n}, timeout=10).json()["id"]
           for n in (1, 3)]  # fmt: skip
    assert [httpx.get(api.url(f"/orders/{i}"), timeout=5).json()["status"] for i in ids] == ["pending"] * 2
    start_worker(cello_procs, env)
    assert [order_status(api, i, "processed")["total"] for i in ids] == [4.5, 13.5]
