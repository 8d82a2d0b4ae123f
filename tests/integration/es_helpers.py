"""Helpers for the event sourcing / CQRS / saga tests: one store per test on memory, SQLite
(a file in tmp_path) and PostgreSQL (tables with a unique ``es_<hex>_`` prefix, dropped after)."""

from __future__ import annotations

import uuid

from cello.config import EventSourcingConfig
from cello.database import Database
from cello.eventsourcing import EventStore
from cello.saga import SagaOrchestrator
from db_helpers import Loop, url_for

BACKENDS = ["memory", "sqlite", "postgresql"]


def prefix() -> str:
    return f"es_{uuid.uuid4().hex[:10]}_"


async def drop_tables(db: Database, table_prefix: str) -> None:
    for t in ("events", "snapshots", "projections", "sagas"):
        await db.execute(f"DROP TABLE IF EXISTS {table_prefix}{t}")


class Env:
    """What a test needs for one backend: the URL, the table prefix, a loop."""

    def __init__(self, backend: str, tmp_path, loop: Loop) -> None:
        self.backend = backend
        self.loop = loop
        self.prefix = prefix()
        self.url = None if backend == "memory" else url_for(backend, tmp_path)
        self._dbs: list[Database] = []
        self._closers: list = []

    def config(self, **kw) -> EventSourcingConfig:
        if self.backend == "memory":
            return EventSourcingConfig(**kw)
        return EventSourcingConfig(store_type=self.backend, connection_url=self.url, **kw)

    async def store(self, **kw) -> EventStore:
        s = await EventStore.connect(self.config(**kw), table_prefix=self.prefix)
        self._closers.append(s.close)
        return s

    async def orchestrator(self, config=None) -> SagaOrchestrator:
        o = await SagaOrchestrator.connect(config, url=self.url, table_prefix=self.prefix)
        self._closers.append(o.close)
        return o

    async def orchestrator_with(self, config=None, **kw) -> SagaOrchestrator:
        o = await SagaOrchestrator.connect(config, url=self.url, table_prefix=self.prefix, **kw)
        self._closers.append(o.close)
        return o

    def teardown(self) -> None:
        async def go():
            for close in self._closers:
                await close()
            if self.backend == "postgresql":
                db = await Database.connect(self.url)
                await drop_tables(db, self.prefix)
                await db.close()

        self.loop.run(go())
