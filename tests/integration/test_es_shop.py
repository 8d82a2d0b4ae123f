"""examples/shop end to end over a real server: stock, an order saga (reserve → charge → ship →
confirm), compensation, and a SIGKILL between two steps followed by a resume on restart
(SQLite and PostgreSQL)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from cello.database import Database
from db_helpers import url_for
from es_helpers import Loop, drop_tables


@pytest.fixture(params=["sqlite", "postgresql"])
def shop_env(request, tmp_path):
    url = url_for(request.param, tmp_path)
    prefix = f"es_shop_{uuid.uuid4().hex[:8]}_"
    yield {"DATABASE_URL": url, "SHOP_PREFIX": prefix, "SHOP_SAGA_LEASE": "1"}
    if request.param == "postgresql":
        loop = Loop()

        async def clean():
            db = await Database.connect(url)
            for t in ("orders", "payments", "shipments"):
                await db.execute(f"DROP TABLE IF EXISTS {prefix}{t}")
            await drop_tables(db, f"{prefix}es_")
            await db.close()

        loop.run(clean())
        loop.close()


def poll(fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_order_saga_happy_path_and_compensation(serve, shop_env):
    server = serve("shop_app", env=shop_env, fresh=True)
    c = httpx.Client(base_url=server.base_url, timeout=20)
    assert c.post("/stock", json={"sku": "mug", "quantity": 5}).json() == {"sku": "mug", "available": 5}
    r = c.post("/orders", json={"id": "o1", "sku": "mug", "quantity": 2, "price": 12, "address": "Main St 1"})
    assert r.status_code == 201, r.text
    assert r.json()["saga"] == "completed"
    order = c.get("/orders/o1").json()
    assert order["status"] == "confirmed" and order["total"] == 24 and order["saga"] == "completed"
    assert c.get("/stock/mug").json()["available"] == 3
    assert c.get("/payments/o1").json() == [{"amount": 24, "status": "charged"}]
    # Shipping fails: the charge is refunded and the stock released, in reverse order.
    r = c.post("/orders", json={"id": "o2", "sku": "mug", "quantity": 1, "price": 12, "address": "nowhere"})
    assert r.status_code == 409 and r.json()["saga"] == "compensated"
    assert "does not deliver" in r.json()["error"]
    assert c.get("/orders/o2").json()["status"] == "cancelled"
    assert c.get("/payments/o2").json() == [{"amount": 12, "status": "refunded"}]
    assert c.get("/stock/mug").json()["available"] == 3
    # Not enough stock: rejected at the first step, nothing charged.
    r = c.post("/orders", json={"id": "o3", "sku": "mug", "quantity": 50, "price": 1, "address": "x"})
    assert r.json()["saga"] == "compensated" and c.get("/payments/o3").json() == []
    # Bad input is a problem, not a crash.
    bad = c.post("/orders", json={"id": "o4", "sku": "mug"})
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")
    assert c.post("/stock", json={"sku": "mug", "quantity": -1}).status_code == 422
    assert c.get("/health/ready").status_code == 200


def test_crash_between_steps_then_resume(serve, shop_env):
    crashing = serve("shop_app", env={**shop_env, "SHOP_CRASH_AFTER": "charge"}, fresh=True)
    c = httpx.Client(base_url=crashing.base_url, timeout=20)
    assert c.post("/stock", json={"sku": "lamp", "quantity": 4}).status_code == 200
    with pytest.raises(httpx.TransportError):
        c.post("/orders", json={"id": "k1", "sku": "lamp", "quantity": 1, "price": 30, "address": "Elm 2"})
    assert poll(lambda: not crashing.alive(), 10), "the server should have killed itself"
    # Restart: the saga resumes after "charge" and finishes; nothing ran twice.
    server = serve("shop_app", env=shop_env, fresh=True)
    c = httpx.Client(base_url=server.base_url, timeout=20)
    order = poll(lambda: (o := c.get("/orders/k1").json()).get("saga") == "completed" and o)
    assert order and order["status"] == "confirmed", c.get("/orders/k1").text
    assert c.get("/payments/k1").json() == [{"amount": 30, "status": "charged"}]  # charged once
    assert c.get("/stock/lamp").json()["available"] == 3  # reserved once
