"""``cello.eventsourcing``: events, aggregates, snapshots, projections and event stores.

Stores: ``memory`` (a process's dicts), SQLite and PostgreSQL through ``cello.database`` (same
pools, transactions and errors). Appends are one transaction each, checked against the
aggregate's version (``ConcurrencyError`` for the loser of a race); every event also gets a
global position for projections (``read_all``).
"""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, ClassVar

from .config import EventSourcingConfig
from .errors import FeatureNotAvailable

__all__ = [
    "Aggregate",
    "ConcurrencyError",
    "Event",
    "EventStore",
    "EventStoreError",
    "FeatureNotAvailable",
    "Projection",
    "Snapshot",
    "event_handler",
    "upcaster",
]


class EventStoreError(Exception):
    """A failure of the event store (bad input, limits)."""


class ConcurrencyError(EventStoreError):
    """Another writer appended to the aggregate first: reload it and try again."""

    status_code = 409

    def __init__(self, aggregate_id: str, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"aggregate {aggregate_id!r}: expected version {expected}, but it is at {actual} (concurrent write)"
        )
        self.aggregate_id = aggregate_id
        self.expected_version = expected
        self.actual_version = actual


# ---- events -------------------------------------------------------------------------------------

_EVENT_TYPES: dict[str, type[Event]] = {}
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}
_ENVELOPE = ("event_id", "aggregate_id", "version", "timestamp", "metadata", "position")
_MISSING = object()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    return datetime.fromisoformat(str(value))


class Event:
    """A fact that happened. Subclass with annotated fields (``order_id: str``), or use
    ``Event("Type", {...})`` directly. ``event_type`` is the class name unless set;
    ``schema_version`` (class attribute) versions the payload for upcasters. ``version`` is the
    event's number within its aggregate and ``position`` its place in the global stream (both
    set when the event is applied/stored)."""

    event_type: ClassVar[str] = "Event"
    schema_version: ClassVar[int] = 1
    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            cls.event_type = cls.__name__
        fields: list[str] = list(cls._fields)
        defaults = dict(cls._defaults)
        for name, ann in cls.__dict__.get("__annotations__", {}).items():
            if name.startswith("_") or "ClassVar" in str(ann) or name in _ENVELOPE or name == "schema_version":
                continue
            if name not in fields:
                fields.append(name)
            if name in cls.__dict__:
                # Fields live in ``data``; a class attribute would shadow them.
                defaults[name] = cls.__dict__[name]
                delattr(cls, name)
        cls._fields = tuple(fields)
        cls._defaults = defaults
        _EVENT_TYPES[cls.event_type] = cls

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        envelope = {k: kwargs.pop(k) for k in _ENVELOPE if k in kwargs}
        if type(self) is Event:
            # Generic: Event(event_type, data=None, ...).
            if args:
                kwargs.setdefault("event_type", args[0])
                if len(args) > 1:
                    kwargs.setdefault("data", args[1])
            event_type = kwargs.pop("event_type", None)
            if not event_type:
                raise TypeError("Event() needs an event_type (or subclass Event)")
            self.__dict__["event_type"] = str(event_type)
            data = dict(kwargs.pop("data", None) or {})
            data.update(kwargs)
            self.__dict__["_data"] = data
        else:
            if len(args) > len(self._fields):
                raise TypeError(f"{type(self).__name__}() takes {len(self._fields)} positional fields")
            data = dict(zip(self._fields, args, strict=False))
            if "data" in kwargs and "data" not in self._fields and isinstance(kwargs["data"], dict):
                data.update(kwargs.pop("data"))
            for k, v in kwargs.items():
                if k not in self._fields:
                    raise TypeError(f"{type(self).__name__}() got an unexpected field {k!r}")
                data[k] = v
            missing = [f for f in self._fields if f not in data and f not in self._defaults]
            if missing:
                raise TypeError(f"{type(self).__name__}() missing field(s): {', '.join(missing)}")
            for f in self._fields:
                if f not in data:
                    default = self._defaults[f]
                    data[f] = default.copy() if isinstance(default, (list, dict, set)) else default
            self.__dict__["_data"] = data
        self.event_id: str = str(envelope.get("event_id") or uuid.uuid4())
        self.aggregate_id: str | None = envelope.get("aggregate_id")
        self.version: int = int(envelope.get("version") or 0)
        self.timestamp: datetime = _parse_time(envelope["timestamp"]) if envelope.get("timestamp") else _now()
        self.metadata: dict[str, Any] = dict(envelope.get("metadata") or {})
        self.position: int | None = envelope.get("position")

    @property
    def data(self) -> dict[str, Any]:
        """The payload (the fields of a typed event)."""
        return self.__dict__["_data"]

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("_data")
        if data is not None and name in data:
            return data[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        data = self.__dict__.get("_data")
        if data is not None and name in data and name not in _ENVELOPE:
            data[name] = value
        else:
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "aggregate_id": self.aggregate_id,
            "version": self.version,
            "position": self.position,
            "timestamp": self.timestamp.isoformat(),
            "metadata": self.metadata,
            "data": self.data,
        }

    def json(self) -> str:
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        """Rebuild an event (upcasting an older ``schema_version`` of its payload)."""
        event_type = str(d["event_type"])
        data = upcast(event_type, int(d.get("schema_version") or 1), dict(d.get("data") or {}))
        target = _EVENT_TYPES.get(event_type)
        envelope = {k: d.get(k) for k in _ENVELOPE if d.get(k) is not None}
        if target is None or (cls is not Event and not issubclass(target, cls)):
            return Event(event_type, data, **envelope)
        known = {k: v for k, v in data.items() if k in target._fields}
        ev = target(**known, **envelope)
        ev.data.update({k: v for k, v in data.items() if k not in target._fields})
        return ev

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        return f"<{self.event_type} v{self.version} {self.data!r}>"


def upcaster(event_type: str | type[Event], from_version: int) -> Callable[[Callable], Callable]:
    """Register ``fn(data) -> data`` that upgrades ``event_type`` payloads stored at
    ``from_version`` to ``from_version + 1``; chains run when an old event is read."""
    name = event_type if isinstance(event_type, str) else event_type.event_type

    def decorator(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        _UPCASTERS[(name, int(from_version))] = fn
        return fn

    return decorator


def upcast(event_type: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
    target = _EVENT_TYPES.get(event_type)
    want = target.schema_version if target is not None else None
    v = schema_version
    while (event_type, v) in _UPCASTERS and (want is None or v < want):
        data = _UPCASTERS[(event_type, v)](dict(data))
        v += 1
    if want is not None and v < want:
        raise EventStoreError(f"{event_type} stored at schema version {v}: no upcaster to version {want}")
    return data


# ---- aggregates -----------------------------------------------------------------------------------


def event_handler(event_type: str | type[Event]) -> Callable[[Callable], Callable]:
    """Mark an aggregate (or projection) method as the handler of ``event_type``."""
    name = event_type if isinstance(event_type, str) else event_type.event_type

    def decorator(fn: Callable) -> Callable:
        fn.__cello_event_type__ = name  # type: ignore[attr-defined]
        return fn

    return decorator


def _collect_handlers(cls: type) -> dict[str, str]:
    handlers: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            name = getattr(value, "__cello_event_type__", None)
            if name is not None:
                handlers[name] = attr
    return handlers


class Aggregate:
    """State rebuilt from its events. ``apply(event)`` records a new event and runs its
    ``@event_handler``; ``load_from_events`` replays stored ones."""

    aggregate_type: ClassVar[str] = "Aggregate"
    _handlers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "aggregate_type" not in cls.__dict__:
            cls.aggregate_type = cls.__name__
        cls._handlers = _collect_handlers(cls)

    def __init__(self, aggregate_id: str | None = None) -> None:
        self.id = str(aggregate_id) if aggregate_id is not None else str(uuid.uuid4())
        self.version = 0
        self._uncommitted: list[Event] = []

    @property
    def aggregate_id(self) -> str:
        return self.id

    def _mutate(self, event: Event) -> None:
        attr = self._handlers.get(event.event_type)
        if attr is not None:
            getattr(self, attr)(event)

    def apply(self, event: Event) -> Event:
        """Record a new event: its handler mutates the state; it waits in
        ``uncommitted_events`` until the store saves it."""
        self._mutate(event)
        self.version += 1
        event.aggregate_id = self.id
        event.version = self.version
        self._uncommitted.append(event)
        return event

    def load_from_events(self, events: Iterable[Event]) -> Aggregate:
        for event in events:
            self._mutate(event)
            self.version = event.version or self.version + 1
        return self

    @property
    def uncommitted_events(self) -> list[Event]:
        return list(self._uncommitted)

    def clear_uncommitted(self) -> None:
        self._uncommitted.clear()

    def get_version(self) -> int:
        return self.version

    def snapshot_state(self) -> dict[str, Any]:
        """The state a snapshot keeps (JSON-able); default: the public attributes."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("id", "version")}

    def restore_state(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} v{self.version}>"


class Snapshot:
    """An aggregate's state at ``version``."""

    def __init__(
        self,
        aggregate_id: str,
        version: int,
        state: dict[str, Any],
        aggregate_type: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> None:
        self.aggregate_id = str(aggregate_id)
        self.version = int(version)
        self.state = dict(state)
        self.aggregate_type = aggregate_type
        self.timestamp = _parse_time(timestamp) if timestamp else _now()

    def to_dict(self) -> dict[str, Any]:
        return {
            "aggregate_id": self.aggregate_id,
            "version": self.version,
            "state": self.state,
            "aggregate_type": self.aggregate_type,
            "timestamp": self.timestamp.isoformat(),
        }

    def __repr__(self) -> str:
        return f"<Snapshot {self.aggregate_id} v{self.version}>"


class Projection:
    """A read model fed from the global stream. Methods marked ``@event_handler`` (sync or
    async) receive events in position order; the store keeps the position reached under
    ``name`` so a restarted process resumes there. ``reset()`` clears the read model for a
    rebuild from position 0."""

    name: ClassVar[str] = ""
    _handlers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__
        cls._handlers = _collect_handlers(cls)

    async def handle(self, event: Event) -> None:
        attr = self._handlers.get(event.event_type)
        if attr is None:
            return
        result = getattr(self, attr)(event)
        if inspect.isawaitable(result):
            await result

    async def reset(self) -> None:
        """Clear the read model (override); called by ``EventStore.rebuild``."""


# ---- stores -------------------------------------------------------------------------------------


def _config_of(config: EventSourcingConfig | str | None) -> EventSourcingConfig:
    if config is None:
        return EventSourcingConfig()
    if isinstance(config, str):
        scheme = config.split(":", 1)[0].lower()
        kind = "memory" if scheme == "memory" else ("sqlite" if scheme == "sqlite" else "postgresql")
        return EventSourcingConfig(store_type=kind, connection_url=None if kind == "memory" else config)
    if isinstance(config, EventSourcingConfig):
        return config
    raise TypeError(f"expected an EventSourcingConfig or a URL, not {type(config).__name__}")


class _Opened:
    """The store's backend, opened (tables created) before its first use: a store whose
    database was down at startup starts working once the database is back."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store._raw, name)
        if not inspect.iscoroutinefunction(attr) or name in ("open", "close"):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            await self._store.open()
            return await attr(*args, **kwargs)

        return call


class EventStore:
    """Events of aggregates and the global stream. ``await EventStore.connect(config)``;
    ``EventSourcingConfig.memory()``, ``EventSourcingConfig(store_type="sqlite",
    connection_url="sqlite://events.db")`` or ``EventSourcingConfig.postgresql(url)``; or
    ``database=`` an open ``cello.database.Database`` (the app's pool). ``table_prefix`` names
    the tables (``<prefix>events``, ``<prefix>snapshots``, ``<prefix>projections``)."""

    def __init__(
        self,
        config: EventSourcingConfig | str | None = None,
        *,
        database: Any = None,
        table_prefix: str = "cello_es_",
    ) -> None:
        self.config = _config_of(config)
        if int(self.config.event_ttl_secs) > 0:
            raise FeatureNotAvailable(
                "EventSourcingConfig.event_ttl_secs",
                16,
                hint="events are kept forever; expiring events would corrupt aggregate versions",
            )
        if not table_prefix.replace("_", "").isalnum():
            raise ValueError(f"bad table_prefix {table_prefix!r}")
        from ._es_backends import MemoryBackend, SqlBackend

        self.table_prefix = table_prefix
        kind = str(self.config.store_type)
        if database is not None:
            raw: Any = SqlBackend(database, table_prefix, owns=False)
        elif kind == "memory":
            raw = MemoryBackend()
        else:
            from .database import Database

            url = self.config.connection_url or ("sqlite://cello.db" if kind == "sqlite" else None)
            if not url:
                raise ValueError("EventSourcingConfig(store_type='postgresql') needs connection_url")
            raw = SqlBackend(Database(url, name="event_store"), table_prefix, owns=True)
        self._raw = raw
        self._backend = _Opened(self)
        self._subscribers: list[Callable[[list[Event]], Any]] = []
        self._projections: dict[str, Projection] = {}
        self._opened = False

    @classmethod
    async def connect(
        cls, config: EventSourcingConfig | str | None = None, *, database: Any = None, table_prefix: str = "cello_es_"
    ) -> EventStore:
        store = cls(config, database=database, table_prefix=table_prefix)
        await store.open()
        return store

    @property
    def backend(self) -> str:
        """``memory``, ``sqlite`` or ``postgresql``."""
        return self._backend.kind

    @property
    def database(self) -> Any:
        return getattr(self._raw, "db", None)

    async def open(self) -> None:
        """Create the tables if needed (also done by the first operation)."""
        if not self._opened:
            await self._raw.open()
            self._opened = True

    async def close(self) -> None:
        await self._backend.close()

    async def ping(self) -> bool:
        """Raises when the store cannot be reached (the readiness check)."""
        await self.open()
        await self._backend.ping()
        return True

    # ---- writing --------------------------------------------------------------------------------

    async def append(
        self, aggregate_id: str, events: Iterable[Event], expected_version: int | None = None, *, publish: bool = True
    ) -> int:
        """Store ``events`` after the aggregate's last one, in one transaction; with
        ``expected_version``, only if the aggregate is still at that version (else
        ``ConcurrencyError``). Returns the aggregate's new version. ``publish``: then call
        the subscribers and bring the projections up to date."""
        events = list(events)
        aggregate_id = str(aggregate_id)
        if not events:
            return await self.get_version(aggregate_id)
        for e in events:
            if not isinstance(e, Event):
                raise TypeError(f"append() takes Events, not {type(e).__name__}")
        version = await self._backend.append(
            aggregate_id, events, expected_version, int(self.config.max_events_per_aggregate)
        )
        if publish:
            await self._publish(events)
        return version

    async def save(self, aggregate: Aggregate, *, publish: bool = True) -> int:
        """Append the aggregate's uncommitted events (checked against the version it was
        loaded at), take a snapshot when a ``snapshot_interval`` boundary is crossed."""
        pending = aggregate.uncommitted_events
        if not pending:
            return aggregate.version
        base = aggregate.version - len(pending)
        version = await self.append(aggregate.id, pending, expected_version=base, publish=publish)
        aggregate.clear_uncommitted()
        interval = int(self.config.snapshot_interval)
        if self.config.enable_snapshots and interval > 0 and version // interval > base // interval:
            await self.save_snapshot(
                Snapshot(aggregate.id, aggregate.version, aggregate.snapshot_state(), aggregate.aggregate_type)
            )
        return version

    # ---- reading --------------------------------------------------------------------------------

    async def get_events(self, aggregate_id: str, from_version: int = 0) -> list[Event]:
        """The aggregate's events after ``from_version``, in order."""
        rows = await self._backend.get_events(str(aggregate_id), int(from_version))
        return [Event.from_dict(r) for r in rows]

    async def get_version(self, aggregate_id: str) -> int:
        return await self._backend.get_version(str(aggregate_id))

    async def read_all(self, from_position: int = 0, limit: int | None = None) -> list[Event]:
        """The global stream after ``from_position``, in position order."""
        rows = await self._backend.read_all(int(from_position), limit)
        return [Event.from_dict(r) for r in rows]

    async def last_position(self) -> int:
        return await self._backend.last_position()

    async def aggregates(self, limit: int = 100) -> list[dict[str, Any]]:
        """``{aggregate_id, version, events}`` of the most recently written aggregates."""
        return await self._backend.aggregates(limit)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self._backend.save_snapshot(snapshot.to_dict())

    async def get_snapshot(self, aggregate_id: str) -> Snapshot | None:
        d = await self._backend.get_snapshot(str(aggregate_id))
        return None if d is None else Snapshot(**d)

    async def load(self, aggregate_class: type[Aggregate], aggregate_id: str) -> Aggregate | None:
        """The aggregate from its latest snapshot plus the events after it; None when it has
        no events."""
        aggregate = aggregate_class(str(aggregate_id))
        start = 0
        snap = await self.get_snapshot(aggregate_id) if self.config.enable_snapshots else None
        if snap is not None:
            aggregate.restore_state(snap.state)
            aggregate.version = start = snap.version
        events = await self.get_events(aggregate_id, start)
        if not events and snap is None:
            return None
        aggregate.load_from_events(events)
        return aggregate

    # ---- publishing and projections ---------------------------------------------------------

    def subscribe(self, callback: Callable[[list[Event]], Any]) -> Callable[[list[Event]], Any]:
        """Call ``callback(events)`` (sync or async) after each successful append."""
        self._subscribers.append(callback)
        return callback

    async def _publish(self, events: list[Event]) -> None:
        for cb in list(self._subscribers):
            result = cb(events)
            if inspect.isawaitable(result):
                await result
        if self._projections:
            await self.run_projections()

    def add_projection(self, projection: Projection) -> Projection:
        """Keep ``projection`` up to date after every append (``run_projections``)."""
        self._projections[projection.name] = projection
        return projection

    async def run_projections(self) -> None:
        for p in list(self._projections.values()):
            await self.run_projection(p)

    async def projection_position(self, name: str) -> int:
        return await self._backend.get_position(name)

    async def projection_positions(self) -> dict[str, int]:
        return await self._backend.positions()

    async def run_projection(self, projection: Projection, batch: int = 500) -> int:
        """Feed ``projection`` the events after its stored position; each batch and its new
        position are one transaction (SQL stores), so a crash neither skips nor repeats an
        event for a read model kept in the same database. Returns the position reached."""
        lock = self._backend.lock_for(projection.name)
        async with lock:
            position = await self._backend.get_position(projection.name)
            while True:
                events = await self.read_all(position, batch)
                if not events:
                    return position
                async with self._backend.transaction():
                    for ev in events:
                        await projection.handle(ev)
                    position = int(events[-1].position or position)
                    await self._backend.set_position(projection.name, position)

    async def rebuild(self, projection: Projection) -> int:
        """Replay the whole stream into a reset ``projection``."""
        await projection.reset()
        await self._backend.set_position(projection.name, 0)
        return await self.run_projection(projection)

    def __repr__(self) -> str:
        return f"<EventStore {self.backend}>"


def enable_event_sourcing(
    app: Any, config: EventSourcingConfig | str | None = None, *, table_prefix: str = "cello_es_"
) -> EventStore:
    """``app.enable_event_sourcing``: an ``EventStore`` as ``app.event_store`` and the singleton
    ``event_store``. Without a config it lives in the app's database (``enable_database``:
    SQLite by default) or, with no database, in memory. Tables are created at startup; an
    ``event_store`` readiness check; the ``/events`` development dashboard."""
    from . import observability

    database = None
    if (
        config is None
        or not isinstance(config, str)
        and str(config.store_type) == "sqlite"
        and not config.connection_url
    ):
        database = app._singletons.get("database")
    store = EventStore(config, database=database, table_prefix=table_prefix)
    app.event_store = store
    app.register_singleton("event_store", store)
    bus = app._singletons.get("command_bus")
    if bus is not None and bus.event_store is None:
        bus.event_store = store

    async def open_store() -> None:
        from .database import DatabaseError

        try:
            await store.open()
        except DatabaseError as exc:
            # Serve anyway: /health/ready answers 503 until the store is reachable.
            logging.getLogger("cello.eventsourcing").warning("event store unreachable at startup: %s", exc)

    async def close_store() -> None:
        if getattr(store._raw, "owns", False):
            await store.close()

    app.on_event("startup")(open_store)
    app.on_event("shutdown")(close_store)
    observability.register_builtin_check("event_store", store.ping)

    def conflict(request: Any, exc: ConcurrencyError) -> Any:
        from .errors import HTTPException

        # An unhandled lost race is the client's to retry: 409 problem+json, not a 500.
        raise HTTPException(409, str(exc))

    app._exception_handlers.setdefault(ConcurrencyError, conflict)
    from ._es_dashboard import install

    install(app)
    return store
