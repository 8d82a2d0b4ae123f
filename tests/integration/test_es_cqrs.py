"""CQRS buses: validation, timeouts, retries, events stored and published (memory, SQLite,
PostgreSQL); app.enable_cqrs and Depends("command_bus") over the real stack."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cello import App, Depends
from cello.config import CqrsConfig
from cello.cqrs import (
    Command,
    CommandBus,
    CommandResult,
    Query,
    QueryBus,
    QueryResult,
    command_handler,
    query_handler,
)
from cello.eventsourcing import Aggregate, ConcurrencyError, Event, Projection, event_handler
from cello.testing import TestClient
from es_helpers import BACKENDS, Env, Loop


@pytest.fixture(scope="module")
def loop():
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(params=BACKENDS)
def env(request, tmp_path, loop):
    e = Env(request.param, tmp_path, loop)
    yield e
    e.teardown()


class Opened(Event):
    owner: str


class Credited(Event):
    amount: int


class Wallet(Aggregate):
    def __init__(self, aggregate_id=None):
        super().__init__(aggregate_id)
        self.owner = None
        self.total = 0

    @event_handler("Opened")
    def _opened(self, e):
        self.owner = e.owner

    @event_handler("Credited")
    def _credited(self, e):
        self.total += e.amount


class OpenWallet(Command):
    wallet_id: str
    owner: str

    def validate(self):
        if not self.owner:
            raise ValueError("owner is required")


class Credit(Command):
    wallet_id: str
    amount: int

    def validate(self):
        return [] if self.amount > 0 else ["amount must be positive"]


class GetWallet(Query):
    wallet_id: str


class Totals(Projection):
    name = "totals"

    def __init__(self):
        self.totals = {}

    @event_handler("Credited")
    def credited(self, e):
        self.totals[e.aggregate_id] = self.totals.get(e.aggregate_id, 0) + e.amount


def wid() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


def make_buses(store, config=None):
    cb = CommandBus(config or CqrsConfig(), event_store=store)
    qb = QueryBus(config or CqrsConfig())

    @cb.register(OpenWallet)
    async def open_wallet(cmd):
        w = Wallet(cmd.wallet_id)
        w.apply(Opened(owner=cmd.owner))
        return w  # the bus stores its uncommitted events

    @cb.register(Credit)
    async def credit(cmd):
        w = await store.load(Wallet, cmd.wallet_id)
        if w is None:
            return CommandResult.fail("no such wallet")
        w.apply(Credited(amount=cmd.amount))
        return w

    @qb.register(GetWallet)
    async def get_wallet(q):
        w = await store.load(Wallet, q.wallet_id)
        return None if w is None else {"owner": w.owner, "total": w.total}

    return cb, qb


def test_commands_store_events_and_queries_read_them(env):
    async def go():
        store = await env.store()
        totals = store.add_projection(Totals())
        cb, qb = make_buses(store)
        w = wid()
        r = await cb.dispatch(OpenWallet(wallet_id=w, owner="ann"))
        assert r.success and r.status == "ok" and r.data == {"id": w, "version": 1}
        assert [e.event_type for e in r.events] == ["Opened"]
        assert (await cb.dispatch(Credit(wallet_id=w, amount=5))).success
        assert [e.event_type for e in await store.get_events(w)] == ["Opened", "Credited"]
        # Published to the projection before dispatch returned (enable_event_sync).
        assert totals.totals == {w: 5}
        q = await qb.execute(GetWallet(wallet_id=w))
        assert q.success and q.data == {"owner": "ann", "total": 5}
        nf = await qb.execute(GetWallet(wallet_id=wid()))
        assert not nf.success and nf.status == "not_found" and nf.is_not_found

    env.loop.run(go())


def test_event_sync_off_leaves_projections_for_later(env):
    async def go():
        store = await env.store()
        totals = store.add_projection(Totals())
        cb, _ = make_buses(store, CqrsConfig(enable_event_sync=False))
        seen = []
        cb.on_events(seen.extend)
        w = wid()
        assert (await cb.dispatch(OpenWallet(wallet_id=w, owner="bo"))).success
        assert (await cb.dispatch(Credit(wallet_id=w, amount=3))).success
        # Stored, but neither published nor projected yet.
        assert seen == [] and await store.get_version(w) == 2 and totals.totals == {}
        await store.run_projections()
        assert totals.totals == {w: 3}

    env.loop.run(go())


def test_validate_is_called_before_dispatch(env):
    async def go():
        store = await env.store()
        cb, _ = make_buses(store)
        r = await cb.dispatch(OpenWallet(wallet_id=wid(), owner=""))
        assert not r.success and r.status == "rejected" and r.error == "owner is required"
        r = await cb.dispatch(Credit(wallet_id=wid(), amount=-1))
        assert r.is_rejected and "positive" in r.error

    env.loop.run(go())


def test_results_constructors():
    assert CommandResult.ok({"a": 1}).success
    f = CommandResult.fail("boom")
    assert not f.success and f.error == "boom" and f.status == "failed"
    assert CommandResult.rejected("no").status == "rejected"
    assert QueryResult.ok([1]).data == [1]
    assert QueryResult.fail("x").status == "failed"
    assert QueryResult.not_found().status == "not_found"


def test_command_timeout_honoured():
    class Slow(Command):
        pass

    async def go():
        bus = CommandBus(CqrsConfig(command_timeout_ms=50))

        @bus.register(Slow)
        async def slow(cmd):
            await asyncio.sleep(5)

        r = await bus.dispatch(Slow())
        assert not r.success and r.status == "timeout" and "timed out" in r.error

    asyncio.run(go())


def test_query_timeout_honoured():
    class SlowQ(Query):
        pass

    async def go():
        bus = QueryBus(CqrsConfig(query_timeout_ms=50))
        bus.register(SlowQ, lambda q: __import__("time").sleep(0.5) or 1)  # a sync handler, in a thread
        r = await bus.execute(SlowQ())
        assert not r.success and r.status == "timeout"

    asyncio.run(go())


def test_retries_on_concurrency_conflict_up_to_max_retries():
    class Flaky(Command):
        pass

    async def go():
        calls = []
        bus = CommandBus(CqrsConfig(max_retries=2))

        @bus.register(Flaky)
        async def flaky(cmd):
            calls.append(1)
            if len(calls) < 3:
                raise ConcurrencyError("x", 1, 2)
            return "done"

        r = await bus.dispatch(Flaky())
        assert r.success and r.data == "done" and len(calls) == 3
        calls.clear()
        bus.config = CqrsConfig(max_retries=1)
        r = await bus.dispatch(Flaky())
        assert not r.success and "ConcurrencyError" in r.error and len(calls) == 2

    asyncio.run(go())


def test_other_errors_are_not_retried():
    class Bad(Command):
        pass

    async def go():
        calls = []
        bus = CommandBus()
        bus.register(Bad, lambda c: calls.append(1) or (_ for _ in ()).throw(KeyError("k")))
        r = await bus.dispatch(Bad())
        assert not r.success and "KeyError" in r.error and len(calls) == 1

    asyncio.run(go())


def test_concurrent_commands_on_one_aggregate_all_apply(env):
    """Conflicting commands are retried (reload + apply), so none is lost."""

    async def go():
        store = await env.store()
        cb, _ = make_buses(store, CqrsConfig(max_retries=20))
        w = wid()
        await cb.dispatch(OpenWallet(wallet_id=w, owner="c"))
        results = await asyncio.gather(*(cb.dispatch(Credit(wallet_id=w, amount=1)) for _ in range(5)))
        assert all(r.success for r in results), results
        assert (await store.load(Wallet, w)).total == 5

    env.loop.run(go(), timeout=60)


class Ping(Command):
    text: str


class Echo(Query):
    text: str


@command_handler(Ping)
def handle_ping(cmd):
    return {"pong": cmd.text}


@query_handler(Echo)
async def handle_echo(q):
    return q.text.upper()


def test_decorated_handlers_and_app_injection():
    app = App()
    assert app.enable_cqrs(CqrsConfig()) is app

    @app.post("/ping")
    async def ping(request, bus=Depends("command_bus")):
        r = await bus.dispatch(Ping(text=request.json()["text"]))
        return r.to_dict()

    @app.get("/echo/{text}")
    async def echo(text: str, qb=Depends("query_bus")):
        return (await qb.execute(Echo(text=text))).to_dict()

    with TestClient(app) as client:
        r = client.post("/ping", json={"text": "hi"})
        assert r.status_code == 200 and r.json()["data"] == {"pong": "hi"} and r.json()["status"] == "ok"
        assert client.get("/echo/abc").json()["data"] == "ABC"


def test_enable_cqrs_rejects_other_configs():
    with pytest.raises(TypeError):
        App().enable_cqrs({"max_retries": 1})
