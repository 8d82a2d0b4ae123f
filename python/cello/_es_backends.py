"""Storage of ``cello.eventsourcing``: a memory backend and one SQL backend for SQLite and
PostgreSQL, through ``cello.database`` (its pools, transactions and error classes).

Events rows carry both the aggregate's version (``UNIQUE (aggregate_id, version)``: the last
line of defence of optimistic concurrency) and a global ``position``. On PostgreSQL an append
holds a transaction-scoped advisory lock, so positions commit in order and a projection reading
``position > n`` never skips an event that commits late; SQLite's ``BEGIN IMMEDIATE`` already
serialises writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from .eventsourcing import ConcurrencyError, Event, EventStoreError


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _row(e: Event) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "event_type": e.event_type,
        "schema_version": type(e).schema_version,
        "aggregate_id": e.aggregate_id,
        "version": e.version,
        "position": e.position,
        "timestamp": e.timestamp.isoformat(),
        "metadata": dict(e.metadata),
        "data": json.loads(json.dumps(e.data, default=str)),
    }


class _Locks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def lock_for(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock


class MemoryBackend(_Locks):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.streams: dict[str, list[dict[str, Any]]] = {}
        self.log: list[dict[str, Any]] = []
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.projections: dict[str, int] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def append(self, aggregate_id: str, events: list[Event], expected: int | None, limit: int) -> int:
        # No await between the check and the write: atomic on the loop.
        stream = self.streams.setdefault(aggregate_id, [])
        current = len(stream)
        if expected is not None and current != expected:
            raise ConcurrencyError(aggregate_id, expected, current)
        if current + len(events) > limit:
            raise EventStoreError(f"aggregate {aggregate_id!r} would exceed max_events_per_aggregate ({limit})")
        for i, e in enumerate(events, start=1):
            e.aggregate_id = aggregate_id
            e.version = current + i
            e.position = len(self.log) + 1
            row = _row(e)
            stream.append(row)
            self.log.append(row)
        return current + len(events)

    async def get_events(self, aggregate_id: str, from_version: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self.streams.get(aggregate_id, [])[from_version:]]

    async def get_version(self, aggregate_id: str) -> int:
        return len(self.streams.get(aggregate_id, []))

    async def read_all(self, from_position: int, limit: int | None) -> list[dict[str, Any]]:
        rows = self.log[from_position:]
        return [dict(r) for r in (rows if limit is None else rows[:limit])]

    async def last_position(self) -> int:
        return len(self.log)

    async def aggregates(self, limit: int) -> list[dict[str, Any]]:
        ids = sorted(self.streams, key=lambda a: self.streams[a][-1]["position"] if self.streams[a] else 0)
        return [
            {"aggregate_id": a, "version": len(self.streams[a]), "last_position": self.streams[a][-1]["position"]}
            for a in reversed(ids[-limit:])
            if self.streams[a]
        ]

    async def save_snapshot(self, snap: dict[str, Any]) -> None:
        self.snapshots[snap["aggregate_id"]] = json.loads(json.dumps(snap, default=str))

    async def get_snapshot(self, aggregate_id: str) -> dict[str, Any] | None:
        snap = self.snapshots.get(aggregate_id)
        return None if snap is None else json.loads(json.dumps(snap))

    async def get_position(self, name: str) -> int:
        return self.projections.get(name, 0)

    async def set_position(self, name: str, position: int) -> None:
        self.projections[name] = position

    async def positions(self) -> dict[str, int]:
        return dict(self.projections)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


class SqlBackend(_Locks):
    """SQLite or PostgreSQL through a ``cello.database.Database``."""

    def __init__(self, db: Any, prefix: str, owns: bool) -> None:
        super().__init__()
        self.db = db
        self.owns = owns
        self.kind = db.backend
        if self.kind not in ("sqlite", "postgresql"):
            raise ValueError(f"the event store runs on SQLite or PostgreSQL, not {self.kind}")
        self.events = f"{prefix}events"
        self.snapshots = f"{prefix}snapshots"
        self.projections = f"{prefix}projections"
        # The advisory lock key of this store's tables (PostgreSQL).
        self.lock_key = zlib.crc32(self.events.encode()) & 0x7FFFFFFF

    async def open(self) -> None:
        from .database import IntegrityError

        pk = "BIGSERIAL PRIMARY KEY" if self.kind == "postgresql" else "INTEGER PRIMARY KEY AUTOINCREMENT"
        statements = [
            f"CREATE TABLE IF NOT EXISTS {self.events} (position {pk}, aggregate_id VARCHAR(200) NOT NULL, "
            "version BIGINT NOT NULL, event_id VARCHAR(64) NOT NULL, event_type VARCHAR(200) NOT NULL, "
            "schema_version BIGINT NOT NULL, data TEXT NOT NULL, metadata TEXT NOT NULL, "
            f"created_at VARCHAR(40) NOT NULL, CONSTRAINT {self.events}_version UNIQUE (aggregate_id, version))",
            f"CREATE TABLE IF NOT EXISTS {self.snapshots} (aggregate_id VARCHAR(200) PRIMARY KEY, "
            "aggregate_type VARCHAR(200), version BIGINT NOT NULL, state TEXT NOT NULL, created_at VARCHAR(40))",
            f"CREATE TABLE IF NOT EXISTS {self.projections} (name VARCHAR(200) PRIMARY KEY, "
            "position BIGINT NOT NULL, updated_at VARCHAR(40))",
        ]
        for stmt in statements:
            try:
                await self.db.execute(stmt)
            except IntegrityError:
                # Two processes creating the same table at once (PostgreSQL's pg_type race).
                await self.db.execute(stmt)

    async def close(self) -> None:
        if self.owns:
            await self.db.close()

    async def ping(self) -> None:
        await self.db.fetch_val(f"SELECT COUNT(*) FROM {self.projections}")

    async def append(self, aggregate_id: str, events: list[Event], expected: int | None, limit: int) -> int:
        from .database import UniqueViolation

        try:
            async with self.db.begin() as tx:
                if self.kind == "postgresql":
                    await tx.fetch_val("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l", self.lock_key)
                current = int(
                    await tx.fetch_val(
                        f"SELECT COALESCE(MAX(version), 0) FROM {self.events} WHERE aggregate_id = $1", aggregate_id
                    )
                )
                if expected is not None and current != expected:
                    raise ConcurrencyError(aggregate_id, expected, current)
                if current + len(events) > limit:
                    raise EventStoreError(f"aggregate {aggregate_id!r} would exceed max_events_per_aggregate ({limit})")
                positions = []
                for i, e in enumerate(events, start=1):
                    positions.append(
                        await tx.fetch_val(
                            f"INSERT INTO {self.events} (aggregate_id, version, event_id, event_type, schema_version, "
                            "data, metadata, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING position",
                            aggregate_id,
                            current + i,
                            e.event_id,
                            e.event_type,
                            type(e).schema_version,
                            json.dumps(e.data, default=str),
                            json.dumps(e.metadata, default=str),
                            e.timestamp.isoformat(),
                        )
                    )
        except UniqueViolation:
            actual = await self.get_version(aggregate_id)
            raise ConcurrencyError(aggregate_id, expected, actual) from None
        for i, (e, pos) in enumerate(zip(events, positions, strict=True), start=1):
            e.aggregate_id = aggregate_id
            e.version = current + i
            e.position = int(pos)
        return current + len(events)

    _COLUMNS = "position, aggregate_id, version, event_id, event_type, schema_version, data, metadata, created_at"

    @staticmethod
    def _decode(r: Any) -> dict[str, Any]:
        return {
            "position": int(r["position"]),
            "aggregate_id": r["aggregate_id"],
            "version": int(r["version"]),
            "event_id": r["event_id"],
            "event_type": r["event_type"],
            "schema_version": int(r["schema_version"]),
            "data": json.loads(r["data"]),
            "metadata": json.loads(r["metadata"]),
            "timestamp": r["created_at"],
        }

    async def get_events(self, aggregate_id: str, from_version: int) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(
            f"SELECT {self._COLUMNS} FROM {self.events} WHERE aggregate_id = $1 AND version > $2 ORDER BY version",
            aggregate_id,
            from_version,
        )
        return [self._decode(r) for r in rows]

    async def get_version(self, aggregate_id: str) -> int:
        v = await self.db.fetch_val(
            f"SELECT COALESCE(MAX(version), 0) FROM {self.events} WHERE aggregate_id = $1", aggregate_id
        )
        return int(v or 0)

    async def read_all(self, from_position: int, limit: int | None) -> list[dict[str, Any]]:
        sql = f"SELECT {self._COLUMNS} FROM {self.events} WHERE position > $1 ORDER BY position"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._decode(r) for r in await self.db.fetch_all(sql, from_position)]

    async def last_position(self) -> int:
        return int(await self.db.fetch_val(f"SELECT COALESCE(MAX(position), 0) FROM {self.events}") or 0)

    async def aggregates(self, limit: int) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(
            f"SELECT aggregate_id, MAX(version) AS version, MAX(position) AS last_position FROM {self.events} "
            f"GROUP BY aggregate_id ORDER BY MAX(position) DESC LIMIT {int(limit)}"
        )
        return [
            {"aggregate_id": r["aggregate_id"], "version": int(r["version"]), "last_position": int(r["last_position"])}
            for r in rows
        ]

    async def save_snapshot(self, snap: dict[str, Any]) -> None:
        state = json.dumps(snap["state"], default=str)
        await self.db.execute(
            f"INSERT INTO {self.snapshots} (aggregate_id, aggregate_type, version, state, created_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (aggregate_id) DO UPDATE SET "
            "aggregate_type = excluded.aggregate_type, version = excluded.version, state = excluded.state, "
            f"created_at = excluded.created_at WHERE excluded.version >= {self.snapshots}.version",
            snap["aggregate_id"],
            snap.get("aggregate_type"),
            int(snap["version"]),
            state,
            snap.get("timestamp") or _now(),
        )

    async def get_snapshot(self, aggregate_id: str) -> dict[str, Any] | None:
        r = await self.db.fetch_one(
            f"SELECT aggregate_id, aggregate_type, version, state, created_at FROM {self.snapshots} "
            "WHERE aggregate_id = $1",
            aggregate_id,
        )
        if r is None:
            return None
        return {
            "aggregate_id": r["aggregate_id"],
            "aggregate_type": r["aggregate_type"],
            "version": int(r["version"]),
            "state": json.loads(r["state"]),
            "timestamp": r["created_at"],
        }

    async def get_position(self, name: str) -> int:
        v = await self.db.fetch_val(f"SELECT position FROM {self.projections} WHERE name = $1", name)
        return int(v or 0)

    async def set_position(self, name: str, position: int) -> None:
        await self.db.execute(
            f"INSERT INTO {self.projections} (name, position, updated_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
            name,
            int(position),
            _now(),
        )

    async def positions(self) -> dict[str, int]:
        rows = await self.db.fetch_all(f"SELECT name, position FROM {self.projections} ORDER BY name")
        return {r["name"]: int(r["position"]) for r in rows}

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self.db.begin():
            yield
