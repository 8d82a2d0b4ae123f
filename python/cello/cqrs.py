"""``cello.cqrs``: commands and queries, their buses, and the results they answer with.

``CommandBus.dispatch`` calls ``command.validate()`` first (a failure is ``rejected``), runs the
handler under ``CqrsConfig.command_timeout_ms``, retries it on a ``ConcurrencyError`` or an
unreachable database up to ``max_retries`` times, stores the events it emitted in the event
store and (``enable_event_sync``) brings the store's projections up to date before answering.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from .config import CqrsConfig
from .errors import FeatureNotAvailable

__all__ = [
    "Command",
    "CommandBus",
    "CommandResult",
    "FeatureNotAvailable",
    "Query",
    "QueryBus",
    "QueryResult",
    "command_handler",
    "query_handler",
]


class _Message:
    """Fields from annotations (``order_id: str``, defaults as class attributes)."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = list(cls._fields)
        defaults = dict(cls._defaults)
        for name, ann in cls.__dict__.get("__annotations__", {}).items():
            if name.startswith("_") or "ClassVar" in str(ann):
                continue
            if name not in fields:
                fields.append(name)
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
        cls._fields = tuple(fields)
        cls._defaults = defaults

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__}() takes {len(self._fields)} positional arguments")
        values = dict(zip(self._fields, args, strict=False))
        for k, v in kwargs.items():
            if self._fields and k not in self._fields:
                raise TypeError(f"{type(self).__name__}() got an unexpected field {k!r}")
            values[k] = v
        missing = [f for f in self._fields if f not in values and f not in self._defaults]
        if missing:
            raise TypeError(f"{type(self).__name__}() missing field(s): {', '.join(missing)}")
        for f in self._fields:
            if f not in values:
                d = self._defaults[f]
                values[f] = d.copy() if isinstance(d, (list, dict, set)) else d
        for k, v in values.items():
            setattr(self, k, v)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"{type(self).__name__}({args})"


class Command(_Message):
    """A request to change state. Override ``validate()``: raise ``ValueError`` (or return
    False, or a list of error messages) to reject the command before its handler runs."""

    def validate(self) -> Any:
        return None


class Query(_Message):
    """A request to read state."""

    def validate(self) -> Any:
        return None


class CommandResult:
    """``ok(data, events)``, ``fail(error)`` (the handler failed), ``rejected(reason)``
    (validation refused it)."""

    def __init__(
        self,
        success: bool,
        data: Any = None,
        error: str | None = None,
        events: list[Any] | None = None,
        status: str | None = None,
    ) -> None:
        self.success = bool(success)
        self.data = data
        self.error = error
        self.events = list(events or [])
        self.status = status or ("ok" if success else "failed")

    @classmethod
    def ok(cls, data: Any = None, events: list[Any] | None = None) -> CommandResult:
        return cls(True, data, None, events, "ok")

    @classmethod
    def fail(cls, error: Any) -> CommandResult:
        return cls(False, None, str(error), None, "failed")

    @classmethod
    def rejected(cls, reason: Any) -> CommandResult:
        return cls(False, None, str(reason), None, "rejected")

    @property
    def is_rejected(self) -> bool:
        return self.status == "rejected"

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "status": self.status, "data": self.data, "error": self.error}

    def __repr__(self) -> str:
        return f"CommandResult({self.status}, data={self.data!r}, error={self.error!r})"


class QueryResult:
    """``ok(data)``, ``not_found(message)``, ``fail(error)``."""

    def __init__(self, success: bool, data: Any = None, error: str | None = None, status: str | None = None) -> None:
        self.success = bool(success)
        self.data = data
        self.error = error
        self.status = status or ("ok" if success else "failed")

    @classmethod
    def ok(cls, data: Any = None) -> QueryResult:
        return cls(True, data, None, "ok")

    @classmethod
    def not_found(cls, message: Any = "not found") -> QueryResult:
        return cls(False, None, str(message), "not_found")

    @classmethod
    def fail(cls, error: Any) -> QueryResult:
        return cls(False, None, str(error), "failed")

    @property
    def is_not_found(self) -> bool:
        return self.status == "not_found"

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "status": self.status, "data": self.data, "error": self.error}

    def __repr__(self) -> str:
        return f"QueryResult({self.status}, data={self.data!r}, error={self.error!r})"


# Handlers registered with the decorators: every bus sees them (after its own registrations).
_COMMAND_HANDLERS: dict[type, Callable[..., Any]] = {}
_QUERY_HANDLERS: dict[type, Callable[..., Any]] = {}


def command_handler(command_type: type[Command]) -> Callable[[Callable], Callable]:
    """Register ``fn(command)`` (sync or async) as the handler of ``command_type`` on every bus."""

    def decorator(fn: Callable) -> Callable:
        _COMMAND_HANDLERS[command_type] = fn
        fn.__cello_command__ = command_type  # type: ignore[attr-defined]
        return fn

    return decorator


def query_handler(query_type: type[Query]) -> Callable[[Callable], Callable]:
    """Register ``fn(query)`` (sync or async) as the handler of ``query_type`` on every bus."""

    def decorator(fn: Callable) -> Callable:
        _QUERY_HANDLERS[query_type] = fn
        fn.__cello_query__ = query_type  # type: ignore[attr-defined]
        return fn

    return decorator


def _validation_error(message: Any) -> str | None:
    """None when ``validate()`` accepted the message, else the reason."""
    try:
        verdict = message.validate()
    except (ValueError, TypeError) as exc:
        return str(exc) or type(exc).__name__
    if verdict is None or verdict is True:
        return None
    if verdict is False:
        return "invalid"
    if isinstance(verdict, (list, tuple)):
        return "; ".join(map(str, verdict)) if verdict else None
    return str(verdict)


def _find(handlers: dict[type, Callable], fallback: dict[type, Callable], kind: type) -> Callable | None:
    for table in (handlers, fallback):
        for klass in kind.__mro__:
            if klass in table:
                return table[klass]
    return None


async def _call(fn: Callable[..., Any], arg: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(arg)
    # A sync handler runs in a thread, so the timeout holds without blocking the loop.
    result = await asyncio.to_thread(fn, arg)
    if inspect.isawaitable(result):
        result = await result
    return result


def _retryable(exc: BaseException) -> bool:
    from .database import OperationalError
    from .eventsourcing import ConcurrencyError

    return isinstance(exc, (ConcurrencyError, OperationalError))


class CommandBus:
    """Routes each command to its one handler. ``event_store``: where the events a handler
    emits are stored (and published)."""

    def __init__(self, config: CqrsConfig | None = None, event_store: Any = None) -> None:
        self.config = config if config is not None else CqrsConfig()
        self.event_store = event_store
        self._handlers: dict[type, Callable[..., Any]] = {}
        self._published: list[Callable[[list[Any]], Any]] = []

    def register(self, command_type: type[Command], handler: Callable[..., Any] | None = None) -> Any:
        """``bus.register(Cmd, fn)``, or ``@bus.register(Cmd)``."""
        if handler is None:

            def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
                self._handlers[command_type] = fn
                return fn

            return decorator
        self._handlers[command_type] = handler
        return handler

    def on_events(self, callback: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
        """Also call ``callback(events)`` with the events of each successful command."""
        self._published.append(callback)
        return callback

    async def dispatch(self, command: Command) -> CommandResult:
        handler = _find(self._handlers, _COMMAND_HANDLERS, type(command))
        if handler is None:
            return CommandResult.fail(f"no handler registered for {type(command).__name__}")
        reason = _validation_error(command)
        if reason is not None:
            return CommandResult.rejected(reason)
        timeout = float(self.config.command_timeout_ms) / 1000.0
        attempts = 1 + int(self.config.max_retries)
        last: BaseException | None = None
        for attempt in range(attempts):
            try:
                result = await asyncio.wait_for(self._run(handler, command), timeout)
            except asyncio.TimeoutError:
                return CommandResult(False, None, f"timed out after {timeout:g} s", None, "timeout")
            except Exception as exc:  # noqa: BLE001 - a failed command is a result
                last = exc
                if _retryable(exc) and attempt + 1 < attempts:
                    await asyncio.sleep(min(0.5, 0.01 * 2**attempt))
                    continue
                return CommandResult.fail(f"{type(exc).__name__}: {exc}")
            return result
        return CommandResult.fail(str(last))

    async def _run(self, handler: Callable[..., Any], command: Command) -> CommandResult:
        from .eventsourcing import Aggregate, Event

        value = await _call(handler, command)
        if isinstance(value, CommandResult):
            result = value
        elif isinstance(value, Aggregate):
            result = CommandResult.ok({"id": value.id, "version": value.version}, value.uncommitted_events)
            await self._store_aggregate(value)
            await self._publish(result.events)
            return result
        elif isinstance(value, list) and value and all(isinstance(e, Event) for e in value):
            result = CommandResult.ok(None, value)
        else:
            result = CommandResult.ok(value)
        if result.success and result.events:
            unsaved = [e for e in result.events if e.position is None]
            if unsaved:
                await self._store_events(unsaved)
            await self._publish(result.events)
        return result

    async def _store_aggregate(self, aggregate: Any) -> None:
        if self.event_store is None:
            raise RuntimeError("a command handler returned an aggregate but the bus has no event_store")
        await self.event_store.save(aggregate, publish=bool(self.config.enable_event_sync))

    async def _store_events(self, events: list[Any]) -> None:
        if self.event_store is None:
            return
        by_aggregate: dict[str, list[Any]] = {}
        for e in events:
            if not e.aggregate_id:
                raise ValueError(f"event {e.event_type} has no aggregate_id")
            by_aggregate.setdefault(e.aggregate_id, []).append(e)
        for aggregate_id, evs in by_aggregate.items():
            await self.event_store.append(aggregate_id, evs, publish=bool(self.config.enable_event_sync))

    async def _publish(self, events: list[Any]) -> None:
        if not self.config.enable_event_sync:
            return
        for cb in list(self._published):
            r = cb(events)
            if inspect.isawaitable(r):
                await r
        if self.event_store is not None:
            await self.event_store.run_projections()


class QueryBus:
    """Routes each query to its handler under ``CqrsConfig.query_timeout_ms``."""

    def __init__(self, config: CqrsConfig | None = None) -> None:
        self.config = config if config is not None else CqrsConfig()
        self._handlers: dict[type, Callable[..., Any]] = {}

    def register(self, query_type: type[Query], handler: Callable[..., Any] | None = None) -> Any:
        if handler is None:

            def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
                self._handlers[query_type] = fn
                return fn

            return decorator
        self._handlers[query_type] = handler
        return handler

    async def execute(self, query: Query) -> QueryResult:
        handler = _find(self._handlers, _QUERY_HANDLERS, type(query))
        if handler is None:
            return QueryResult.fail(f"no handler registered for {type(query).__name__}")
        reason = _validation_error(query)
        if reason is not None:
            return QueryResult(False, None, reason, "rejected")
        timeout = float(self.config.query_timeout_ms) / 1000.0
        try:
            value = await asyncio.wait_for(_call(handler, query), timeout)
        except asyncio.TimeoutError:
            return QueryResult(False, None, f"timed out after {timeout:g} s", "timeout")
        except Exception as exc:  # noqa: BLE001 - a failed query is a result
            return QueryResult.fail(f"{type(exc).__name__}: {exc}")
        if isinstance(value, QueryResult):
            return value
        if value is None:
            return QueryResult.not_found()
        return QueryResult.ok(value)


def enable_cqrs(app: Any, config: CqrsConfig | None = None) -> Any:
    """``app.enable_cqrs``: ``app.command_bus`` / ``app.query_bus`` and the singletons
    ``command_bus`` / ``query_bus`` (``Depends("command_bus")``), wired to the app's event
    store when ``enable_event_sourcing`` was called. Returns the app."""
    if config is not None and not isinstance(config, CqrsConfig):
        raise TypeError(f"enable_cqrs() needs a CqrsConfig, not {type(config).__name__}")
    store = app._singletons.get("event_store")
    command_bus = CommandBus(config, event_store=store)
    query_bus = QueryBus(config)
    app.command_bus = command_bus
    app.query_bus = query_bus
    app.register_singleton("command_bus", command_bus)
    app.register_singleton("query_bus", query_bus)
    return app
