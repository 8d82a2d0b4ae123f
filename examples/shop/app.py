"""A shop on event sourcing, CQRS and a saga: placing an order runs the saga
reserve stock → charge → ship → confirm, compensated in reverse when a step fails for good.

Everything is stored in the app's database: the embedded SQLite (``shop.db``) by default,
PostgreSQL when ``DATABASE_URL`` is set. Kill the process in the middle of an order and start
it again: the order's saga resumes where it stopped (no step runs twice).

    python examples/shop/app.py                    # SQLite ./shop.db, http://127.0.0.1:8000
    DATABASE_URL=postgresql://postgres@127.0.0.1/test python examples/shop/app.py

    curl -XPOST localhost:8000/stock -d '{"sku": "mug", "quantity": 5}'
    curl -XPOST localhost:8000/orders \
         -d '{"id": "o1", "sku": "mug", "quantity": 2, "price": 12, "address": "Main St 1"}'
    curl localhost:8000/orders/o1
    open http://127.0.0.1:8000/events and /sagas   (development mode only)

``address: "nowhere"`` makes shipping fail: the charge is refunded, the stock released, the
order cancelled.
"""

from __future__ import annotations

import os

from cello import App, Depends, HTTPException, Request
from cello.config import DatabaseConfig, HealthCheckConfig, SagaConfig
from cello.cqrs import Command, CommandResult, Query, QueryResult
from cello.eventsourcing import Aggregate, Event, Projection, event_handler
from cello.saga import Saga, SagaError, SagaStep

PREFIX = os.environ.get("SHOP_PREFIX", "shop_")  # table names (tests run several shops at once)

app = App()
url = os.environ.get("DATABASE_URL", "sqlite://shop.db")
db = app.enable_database(DatabaseConfig(url))
store = app.enable_event_sourcing(table_prefix=f"{PREFIX}es_")
app.enable_cqrs()
sagas = app.enable_sagas(
    SagaConfig(max_retries=2, retry_delay_ms=50),
    table_prefix=f"{PREFIX}es_",
    # How long an order's saga stays with a process that stopped answering (then another resumes it).
    lease_secs=float(os.environ.get("SHOP_SAGA_LEASE", "10")),
)
app.enable_health_checks(HealthCheckConfig())


# ---- the write model: events and aggregates ----------------------------------------------------


class StockAdded(Event):
    quantity: int


class StockReserved(Event):
    order_id: str
    quantity: int


class StockReleased(Event):
    order_id: str
    quantity: int


class Product(Aggregate):
    def __init__(self, aggregate_id=None):
        super().__init__(aggregate_id)
        self.available = 0
        self.reservations: dict[str, int] = {}

    @event_handler(StockAdded)
    def _added(self, e):
        self.available += e.quantity

    @event_handler(StockReserved)
    def _reserved(self, e):
        self.available -= e.quantity
        self.reservations[e.order_id] = e.quantity

    @event_handler(StockReleased)
    def _released(self, e):
        self.available += e.quantity
        self.reservations.pop(e.order_id, None)


class OrderPlaced(Event):
    sku: str
    quantity: int
    total: int
    address: str


class OrderPaid(Event):
    payment_id: int


class OrderShipped(Event):
    tracking: str


class OrderConfirmed(Event):
    pass


class OrderCancelled(Event):
    reason: str


class Order(Aggregate):
    def __init__(self, aggregate_id=None):
        super().__init__(aggregate_id)
        self.status = "new"

    @event_handler(OrderPlaced)
    def _placed(self, e):
        self.status = "placed"

    @event_handler(OrderPaid)
    def _paid(self, e):
        self.status = "paid"

    @event_handler(OrderShipped)
    def _shipped(self, e):
        self.status = "shipped"

    @event_handler(OrderConfirmed)
    def _confirmed(self, e):
        self.status = "confirmed"

    @event_handler(OrderCancelled)
    def _cancelled(self, e):
        self.status = "cancelled"


# ---- the read model: a projection into a table -------------------------------------------------


class OrdersView(Projection):
    name = "orders_view"

    @event_handler(OrderPlaced)
    async def placed(self, e):
        await db.execute(
            f"INSERT INTO {PREFIX}orders (id, sku, quantity, total, status) VALUES ($1, $2, $3, $4, 'placed')",
            e.aggregate_id, e.sku, e.quantity, e.total,
        )  # fmt: skip

    async def _status(self, e, status):
        await db.execute(f"UPDATE {PREFIX}orders SET status = $1 WHERE id = $2", status, e.aggregate_id)

    @event_handler(OrderPaid)
    async def paid(self, e):
        await self._status(e, "paid")

    @event_handler(OrderShipped)
    async def shipped(self, e):
        await self._status(e, "shipped")

    @event_handler(OrderConfirmed)
    async def confirmed(self, e):
        await self._status(e, "confirmed")

    @event_handler(OrderCancelled)
    async def cancelled(self, e):
        await self._status(e, "cancelled")

    async def reset(self):
        await db.execute(f"DELETE FROM {PREFIX}orders")


store.add_projection(OrdersView())


@app.on_event("startup")
async def schema():
    await db.execute(
        f"CREATE TABLE IF NOT EXISTS {PREFIX}orders (id VARCHAR(64) PRIMARY KEY, sku VARCHAR(64), "
        "quantity INTEGER, total INTEGER, status VARCHAR(20))"
    )
    # The "payment provider" and "carrier": side effects a saga must not repeat.
    await db.execute(
        f"CREATE TABLE IF NOT EXISTS {PREFIX}payments (order_id VARCHAR(64), amount INTEGER, status VARCHAR(20))"
    )
    await db.execute(f"CREATE TABLE IF NOT EXISTS {PREFIX}shipments (order_id VARCHAR(64), address VARCHAR(200))")
    await store.run_projections()


# ---- commands and queries ---------------------------------------------------------------------


class AddStock(Command):
    sku: str
    quantity: int

    def validate(self):
        if not self.sku or self.quantity <= 0:
            raise ValueError("sku and a positive quantity are required")


class PlaceOrder(Command):
    id: str
    sku: str
    quantity: int
    price: int
    address: str

    def validate(self):
        if self.quantity <= 0 or self.price < 0:
            raise ValueError("quantity must be positive and price not negative")


class GetOrder(Query):
    id: str


@app.command_bus.register(AddStock)
async def add_stock_handler(cmd: AddStock):
    product = await store.load(Product, cmd.sku) or Product(cmd.sku)
    product.apply(StockAdded(quantity=cmd.quantity))
    return product  # the bus stores the new events (retrying on a concurrent write)


@app.command_bus.register(PlaceOrder)
async def place_order(cmd: PlaceOrder):
    if await store.get_version(cmd.id):
        return CommandResult.rejected(f"order {cmd.id} exists")
    order = Order(cmd.id)
    order.apply(OrderPlaced(sku=cmd.sku, quantity=cmd.quantity, total=cmd.quantity * cmd.price, address=cmd.address))
    return order


@app.query_bus.register(GetOrder)
async def get_order(q: GetOrder):
    row = await db.fetch_one(f"SELECT id, sku, quantity, total, status FROM {PREFIX}orders WHERE id = $1", q.id)
    return None if row is None else dict(row)


# ---- the order saga -----------------------------------------------------------------------------


async def _order_event(order_id: str, event: Event) -> None:
    order = await store.load(Order, order_id)
    order.apply(event)
    await store.save(order)


async def reserve(ctx):
    product = await store.load(Product, ctx["sku"])
    if product is None or product.available < ctx["quantity"]:
        raise SagaError(f"not enough {ctx['sku']} in stock")
    product.apply(StockReserved(order_id=ctx["order_id"], quantity=ctx["quantity"]))
    await store.save(product)


async def release(ctx):
    product = await store.load(Product, ctx["sku"])
    if product is not None and ctx["order_id"] in product.reservations:
        product.apply(StockReleased(order_id=ctx["order_id"], quantity=ctx["quantity"]))
        await store.save(product)
    await _order_event(ctx["order_id"], OrderCancelled(reason="saga compensated"))


async def charge(ctx):
    async with db.begin():
        await db.execute(
            f"INSERT INTO {PREFIX}payments (order_id, amount, status) VALUES ($1, $2, 'charged')",
            ctx["order_id"], ctx["total"],
        )  # fmt: skip
    await _order_event(ctx["order_id"], OrderPaid(payment_id=1))
    return {"charged": ctx["total"]}


async def refund(ctx):
    await db.execute(f"UPDATE {PREFIX}payments SET status = 'refunded' WHERE order_id = $1", ctx["order_id"])


async def ship(ctx):
    if ctx["address"] == "nowhere":
        raise SagaError("the carrier does not deliver there")
    await db.execute(
        f"INSERT INTO {PREFIX}shipments (order_id, address) VALUES ($1, $2)", ctx["order_id"], ctx["address"]
    )
    await _order_event(ctx["order_id"], OrderShipped(tracking=f"T-{ctx['order_id']}"))


async def confirm(ctx):
    await _order_event(ctx["order_id"], OrderConfirmed())


ORDER_SAGA = sagas.register(
    Saga(
        "order",
        [
            SagaStep("reserve_stock", reserve, compensate=release),
            SagaStep("charge", charge, compensate=refund),
            SagaStep("ship", ship),
            SagaStep("confirm", confirm, idempotent=True),
        ],
    )
)


# ---- HTTP API -----------------------------------------------------------------------------------


def _answer(result):
    if result.status == "rejected":
        raise HTTPException(422, result.error)
    if not result.success:
        raise HTTPException(500, result.error)
    return result.data


@app.post("/stock")
async def add_stock(request: Request, bus=Depends("command_bus")):
    body = request.json()
    if not isinstance(body, dict):
        raise HTTPException(400, "a JSON object is required")
    try:
        cmd = AddStock(sku=str(body.get("sku", "")), quantity=int(body.get("quantity", 0)))
    except (TypeError, ValueError) as exc:
        raise HTTPException(400, str(exc)) from None
    _answer(await bus.dispatch(cmd))
    product = await store.load(Product, cmd.sku)
    return {"sku": cmd.sku, "available": product.available}


@app.get("/stock/{sku}")
async def stock(sku: str):
    product = await store.load(Product, sku)
    if product is None:
        raise HTTPException(404, f"no product {sku}")
    return {"sku": sku, "available": product.available, "reserved": product.reservations}


@app.post("/orders")
async def create_order(request: Request, bus=Depends("command_bus")):
    body = request.json()
    if not isinstance(body, dict):
        raise HTTPException(400, "a JSON object is required")
    try:
        cmd = PlaceOrder(
            id=str(body["id"]), sku=str(body["sku"]), quantity=int(body["quantity"]), price=int(body["price"]),
            address=str(body.get("address", "")),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise HTTPException(400, f"bad order: {exc}") from None
    _answer(await bus.dispatch(cmd))
    context = {"order_id": cmd.id, "sku": cmd.sku, "quantity": cmd.quantity, "total": cmd.quantity * cmd.price,
               "address": cmd.address}  # fmt: skip
    result = await sagas.execute("order", context, execution_id=cmd.id)
    return {"id": cmd.id, "saga": result.status, "error": result.error}, 201 if result.success else 409


@app.get("/orders/{id}")
async def read_order(id: str, qb=Depends("query_bus")):
    result = await qb.execute(GetOrder(id=id))
    if isinstance(result, QueryResult) and result.is_not_found:
        raise HTTPException(404, f"no order {id}")
    execution = await sagas.get_execution(id)
    return {**_answer(result), "saga": execution.status if execution else None}


@app.get("/payments/{order_id}")
async def payments(order_id: str):
    rows = await db.fetch_all(f"SELECT amount, status FROM {PREFIX}payments WHERE order_id = $1", order_id)
    return [dict(r) for r in rows]


if __name__ == "__main__":
    app.run()
