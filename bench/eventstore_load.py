"""How long ``EventStore.load`` takes for one aggregate with many events, with and without
snapshots (issue 16: 100,000 events load in well under a second with snapshots).

    python bench/eventstore_load.py [sqlite://es-bench.db | postgresql://... | memory] [N]

Appends N events (default 100,000) in batches, then times load() with the latest snapshot
and get_events() of the whole stream (what a load without snapshots reads). A figure, not a
test; the tables are ``es_bench_*`` and are dropped at the end.
"""

from __future__ import annotations

import asyncio
import sys
import time

from cello.config import EventSourcingConfig
from cello.eventsourcing import Aggregate, Event, EventStore, event_handler


class Ticked(Event):
    n: int


class Counter(Aggregate):
    def __init__(self, aggregate_id=None):
        super().__init__(aggregate_id)
        self.total = 0

    @event_handler(Ticked)
    def _ticked(self, e):
        self.total += e.n


async def main(url: str, n: int) -> None:
    if url == "memory":
        config = EventSourcingConfig(max_events_per_aggregate=n)
    else:
        kind = "sqlite" if url.startswith("sqlite") else "postgresql"
        config = EventSourcingConfig(store_type=kind, connection_url=url, max_events_per_aggregate=n)
    store = await EventStore.connect(config, table_prefix="es_bench_")
    try:
        counter = Counter("bench")
        t = time.perf_counter()
        for _ in range(0, n, 1000):
            for _ in range(min(1000, n - counter.version)):
                counter.apply(Ticked(n=1))
            await store.save(counter)
        print(f"appended {n} events in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        loaded = await store.load(Counter, "bench")
        took = time.perf_counter() - t
        assert loaded.total == n
        print(f"load() with snapshot (interval {config.snapshot_interval}): {took * 1000:.1f} ms")
        t = time.perf_counter()
        events = await store.get_events("bench")
        Counter("bench").load_from_events(events)
        print(f"full replay of {len(events)} events (no snapshot): {time.perf_counter() - t:.2f} s")
    finally:
        db = store.database
        if db is not None:
            for table in ("events", "snapshots", "projections"):
                await db.execute(f"DROP TABLE IF EXISTS es_bench_{table}")
        await store.close()


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1] if len(sys.argv) > 1 else "sqlite://es-bench.db",
            int(sys.argv[2]) if len(sys.argv) > 2 else 100_000,
        )
    )
