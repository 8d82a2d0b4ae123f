"""Events, aggregates, upcasters and the EventStore on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from cello.config import EventSourcingConfig
from cello.errors import FeatureNotAvailable
from cello.eventsourcing import (
    Aggregate,
    ConcurrencyError,
    Event,
    EventStore,
    EventStoreError,
    Projection,
    Snapshot,
    event_handler,
    upcaster,
)
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


class Deposited(Event):
    amount: int
    note: str = ""


class Withdrawn(Event):
    amount: int


class Account(Aggregate):
    def __init__(self, aggregate_id=None):
        super().__init__(aggregate_id)
        self.balance = 0
        self.moves = 0

    @event_handler("Deposited")
    def _on_deposit(self, e):
        self.balance += e.amount
        self.moves += 1

    @event_handler(Withdrawn)
    def _on_withdraw(self, e):
        self.balance -= e.amount
        self.moves += 1

    def deposit(self, amount):
        return self.apply(Deposited(amount=amount))

    def withdraw(self, amount):
        if amount > self.balance:
            raise ValueError("insufficient funds")
        return self.apply(Withdrawn(amount=amount))


def aid() -> str:
    return f"acc-{uuid.uuid4().hex[:8]}"


# ---- events and aggregates (no store) -----------------------------------------------------------


def test_typed_event_fields_and_envelope():
    e = Deposited(amount=5, metadata={"user": "ann"})
    assert e.event_type == "Deposited" and e.amount == 5 and e.note == ""
    assert e.data == {"amount": 5, "note": ""}
    assert e.version == 0 and e.metadata == {"user": "ann"} and e.timestamp.tzinfo is not None
    doc = json.loads(e.json())
    assert doc["event_type"] == "Deposited" and doc["data"] == {"amount": 5, "note": ""}
    assert doc["metadata"] == {"user": "ann"} and doc["event_id"] == e.event_id
    again = Event.from_dict(doc)
    assert type(again) is Deposited and again.amount == 5 and again.event_id == e.event_id
    with pytest.raises(TypeError, match="missing"):
        Deposited()
    generic = Event("Something", {"x": 1})
    assert generic.event_type == "Something" and generic.x == 1


def test_aggregate_apply_load_and_uncommitted():
    a = Account("a1")
    a.deposit(10)
    a.withdraw(3)
    assert a.balance == 7 and a.get_version() == 2
    assert [e.event_type for e in a.uncommitted_events] == ["Deposited", "Withdrawn"]
    assert [e.version for e in a.uncommitted_events] == [1, 2]
    assert all(e.aggregate_id == "a1" for e in a.uncommitted_events)
    events = a.uncommitted_events
    a.clear_uncommitted()
    assert a.uncommitted_events == []
    b = Account("a1").load_from_events(events)
    assert b.balance == 7 and b.get_version() == 2 and b.uncommitted_events == []
    with pytest.raises(ValueError):
        b.withdraw(100)


# ---- the store -----------------------------------------------------------------------------------


def test_append_and_read_back(env):
    async def go():
        store = await env.store()
        a = aid()
        v = await store.append(a, [Deposited(amount=1), Deposited(amount=2, note="x")], expected_version=0)
        assert v == 2
        assert await store.append(a, [Withdrawn(amount=1)]) == 3
        events = await store.get_events(a)
        assert [(type(e), e.version) for e in events] == [(Deposited, 1), (Deposited, 2), (Withdrawn, 3)]
        assert events[1].note == "x" and events[0].aggregate_id == a
        assert [e.version for e in await store.get_events(a, from_version=1)] == [2, 3]
        assert await store.get_version(a) == 3
        acc = await store.load(Account, a)
        assert acc.balance == 2 and acc.version == 3
        assert await store.load(Account, aid()) is None

    env.loop.run(go())


def test_expected_version_mismatch_is_a_concurrency_error(env):
    async def go():
        store = await env.store()
        a = aid()
        await store.append(a, [Deposited(amount=1)], expected_version=0)
        with pytest.raises(ConcurrencyError) as info:
            await store.append(a, [Deposited(amount=1)], expected_version=0)
        assert info.value.actual_version == 1
        assert await store.get_version(a) == 1

    env.loop.run(go())


def test_concurrent_tasks_exactly_one_wins(env):
    async def go():
        store = await env.store()
        a = aid()
        await store.append(a, [Deposited(amount=100)])

        # Eight writers load the aggregate at version 1, then all save at once.
        loaded = await asyncio.gather(*(store.load(Account, a) for _ in range(8)))

        async def writer(acc):
            acc.withdraw(10)
            try:
                await store.save(acc)
                return "ok"
            except ConcurrencyError:
                return "conflict"

        results = await asyncio.gather(*(writer(acc) for acc in loaded))
        assert results.count("ok") == 1, results
        assert results.count("conflict") == 7
        acc = await store.load(Account, a)
        assert acc.version == 2 and acc.balance == 90

    env.loop.run(go())


WRITER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    sys.path.insert(0, {tests!r})
    from cello.config import EventSourcingConfig
    from cello.eventsourcing import ConcurrencyError, EventStore, Event

    class Deposited(Event):
        amount: int
        note: str = ""

    async def main():
        store = await EventStore.connect(EventSourcingConfig(store_type={backend!r}, connection_url={url!r}),
                                         table_prefix={prefix!r})
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while not os.path.exists({barrier!r}):
            if time.monotonic() > deadline:
                raise SystemExit("no barrier")
            await asyncio.sleep(0.005)
        try:
            await store.append({aggregate!r}, [Deposited(amount=1, note=sys.argv[1])], expected_version=0)
            print("ok", flush=True)
        except ConcurrencyError:
            print("conflict", flush=True)
        await store.close()

    asyncio.run(main())
    """
)


def test_two_processes_exactly_one_wins(env, tmp_path):
    if env.backend == "memory":
        pytest.skip("a memory store lives in one process; two processes cannot share it")
    a = aid()
    barrier = str(tmp_path / "go")
    # Create the tables first, so the writers race on the append only.
    env.loop.run(env.store())
    script = WRITER.format(
        tests=os.path.dirname(__file__),
        backend=env.backend,
        url=env.url,
        prefix=env.prefix,
        barrier=barrier,
        aggregate=a,
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, f"p{i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        open(barrier, "w").close()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = sorted(o[0].strip() for o in outs)
    assert results == ["conflict", "ok"], outs

    async def check():
        store = await env.store()
        return await store.get_events(a)

    events = env.loop.run(check())
    assert len(events) == 1 and events[0].version == 1


def test_global_stream_positions_are_ordered(env):
    async def go():
        store = await env.store()
        a, b = aid(), aid()
        await store.append(a, [Deposited(amount=1)])
        await store.append(b, [Deposited(amount=2), Withdrawn(amount=1)])
        await store.append(a, [Withdrawn(amount=1)])
        stream = await store.read_all(0)
        assert [(e.aggregate_id, e.version) for e in stream] == [(a, 1), (b, 1), (b, 2), (a, 2)]
        positions = [e.position for e in stream]
        assert positions == sorted(positions) and len(set(positions)) == 4
        assert [e.position for e in await store.read_all(positions[1])] == positions[2:]
        assert [e.position for e in await store.read_all(0, limit=2)] == positions[:2]
        assert await store.last_position() == positions[-1]

    env.loop.run(go())


class Balances(Projection):
    name = "balances"

    def __init__(self):
        self.balances = {}
        self.seen = 0

    @event_handler("Deposited")
    def deposited(self, e):
        self.seen += 1
        self.balances[e.aggregate_id] = self.balances.get(e.aggregate_id, 0) + e.amount

    @event_handler("Withdrawn")
    async def withdrawn(self, e):
        self.seen += 1
        self.balances[e.aggregate_id] = self.balances.get(e.aggregate_id, 0) - e.amount

    async def reset(self):
        self.balances.clear()
        self.seen = 0


def test_projection_tracks_position_and_resumes_after_restart(env):
    async def go():
        store = await env.store()
        a = aid()
        await store.append(a, [Deposited(amount=5), Deposited(amount=5)])
        p = Balances()
        pos = await store.run_projection(p)
        assert p.balances == {a: 10} and p.seen == 2
        assert await store.projection_position("balances") == pos
        await store.append(a, [Withdrawn(amount=3)])
        if env.backend != "memory":
            # A restart: a new store on the same tables, a new projection instance. It resumes
            # at the stored position (sees only the new event), it does not replay.
            await store.close()
            store = await env.store()
            p = Balances()
        assert await store.run_projection(p) > pos
        assert p.seen == (1 if env.backend != "memory" else 3)
        # Replay rebuilds the read model from position 0.
        await store.rebuild(p)
        assert p.balances == {a: 7} and p.seen == 3

    env.loop.run(go())


def test_projection_is_fed_after_each_append(env):
    async def go():
        store = await env.store()
        p = store.add_projection(Balances())
        a = aid()
        await store.append(a, [Deposited(amount=4)])
        assert p.balances == {a: 4}
        acc = await store.load(Account, a)
        acc.withdraw(1)
        await store.save(acc)
        assert p.balances == {a: 3}

    env.loop.run(go())


def test_snapshots_every_interval_and_load_from_snapshot(env):
    async def go():
        store = await env.store(snapshot_interval=10)
        a = aid()
        acc = Account(a)
        for i in range(25):
            acc.deposit(1)
            if i % 4 == 3:
                await store.save(acc)
        await store.save(acc)
        snap = await store.get_snapshot(a)
        assert isinstance(snap, Snapshot) and snap.version == 20 and snap.state["balance"] == 20
        # load() = snapshot + later events: prove the snapshot is used by marking its state.
        snap.state["moves"] = -1000
        await store.save_snapshot(snap)
        loaded = await store.load(Account, a)
        assert loaded.version == 25 and loaded.balance == 25 and loaded.moves == -1000 + 5

    env.loop.run(go())


def test_snapshots_disabled(env):
    async def go():
        store = await env.store(snapshot_interval=2, enable_snapshots=False)
        acc = Account(aid())
        for _ in range(5):
            acc.deposit(1)
        await store.save(acc)
        assert await store.get_snapshot(acc.id) is None
        assert (await store.load(Account, acc.id)).balance == 5

    env.loop.run(go())


def test_upcaster_upgrades_old_events_when_read(env):
    kind = f"Renamed{uuid.uuid4().hex[:6]}"
    V1 = type(kind, (Event,), {"__annotations__": {"name": str}})

    async def go():
        store = await env.store()
        a = aid()
        await store.append(a, [V1(name="Ada Lovelace")])
        # The schema moves to version 2: first/last instead of name.
        V2 = type(kind, (Event,), {"__annotations__": {"first": str, "last": str}, "schema_version": 2})

        @upcaster(kind, from_version=1)
        def split(data):
            first, _, last = data.pop("name").partition(" ")
            return {**data, "first": first, "last": last}

        (e,) = await store.get_events(a)
        assert type(e) is V2 and (e.first, e.last) == ("Ada", "Lovelace")
        (e,) = await store.read_all(await store.last_position() - 1)
        assert e.first == "Ada"

    env.loop.run(go())


def test_missing_upcaster_is_a_clear_error(env):
    kind = f"Orphan{uuid.uuid4().hex[:6]}"
    V1 = type(kind, (Event,), {"__annotations__": {"x": int}})

    async def go():
        store = await env.store()
        a = aid()
        await store.append(a, [V1(x=1)])
        type(kind, (Event,), {"__annotations__": {"y": int}, "schema_version": 3})
        with pytest.raises(EventStoreError, match="no upcaster"):
            await store.get_events(a)

    env.loop.run(go())


def test_max_events_per_aggregate(env):
    async def go():
        store = await env.store(max_events_per_aggregate=3)
        a = aid()
        await store.append(a, [Deposited(amount=1), Deposited(amount=1)])
        with pytest.raises(EventStoreError, match="max_events_per_aggregate"):
            await store.append(a, [Deposited(amount=1), Deposited(amount=1)])
        assert await store.get_version(a) == 2

    env.loop.run(go())


def test_event_ttl_is_refused_not_ignored():
    with pytest.raises(FeatureNotAvailable):
        EventStore(EventSourcingConfig(event_ttl_secs=60))


def test_store_types_and_defaults(tmp_path):
    assert EventStore().backend == "memory"
    assert EventStore(EventSourcingConfig.memory()).backend == "memory"
    s = EventStore(EventSourcingConfig(store_type="sqlite", connection_url=f"sqlite://{tmp_path}/x.db"))
    assert s.backend == "sqlite"
    assert EventStore(EventSourcingConfig.postgresql("postgresql://u@h/db")).backend == "postgresql"
    with pytest.raises(ValueError, match="connection_url"):
        EventStore(EventSourcingConfig(store_type="postgresql"))


def test_many_events_load_fast_with_snapshots(env):
    """A smoke figure, not a timed assertion: load() after many events reads the snapshot and
    the few events after it."""
    n = 2000 if env.backend != "memory" else 20000

    async def go():
        store = await env.store(snapshot_interval=100, max_events_per_aggregate=10**6)
        acc = Account(aid())
        for _batch in range(0, n, 500):
            for _ in range(500):
                acc.deposit(1)
            await store.save(acc)
        t = time.perf_counter()
        loaded = await store.load(Account, acc.id)
        took = time.perf_counter() - t
        assert loaded.balance == n and loaded.version == n
        print(f"{env.backend}: load after {n} events took {took * 1000:.1f} ms")

    env.loop.run(go(), timeout=120)
