"""``cello.database``: SQL pools and transactions (PostgreSQL, MySQL/MariaDB, SQLite) and Redis.

The work happens in Rust (``cello-data``: sqlx and the ``redis`` crate) on a runtime of its
own; each call returns an asyncio future of the calling loop, resolved without holding the
GIL while the server answers. ``$1..$n`` and ``?`` placeholders work on every backend.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json as _json
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from . import _cello
from .config import DatabaseConfig, RedisConfig
from .errors import FeatureNotAvailable

Record = _cello.Record

DEFAULT_URL = "sqlite://cello.db"

# ---- errors -----------------------------------------------------------------------------------


class DatabaseError(Exception):
    """An error from the database (or the pool). ``status_code`` is what an unhandled one
    answers with (problem+json)."""

    status_code = 500

    def __init__(self, message: str, sqlstate: str | None = None, constraint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.constraint = constraint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, sqlstate={self.sqlstate!r}, constraint={self.constraint!r})"


class IntegrityError(DatabaseError):
    """A constraint was violated (SQLSTATE class 23): 409 Conflict when unhandled."""

    status_code = 409


class UniqueViolation(IntegrityError):
    pass


class ForeignKeyViolation(IntegrityError):
    pass


class NotNullViolation(IntegrityError):
    pass


class CheckViolation(IntegrityError):
    pass


class OperationalError(DatabaseError):
    """The server is unreachable or dropped the connection: 503 when unhandled."""

    status_code = 503


class PoolTimeout(OperationalError):
    """No connection became free within ``connection_timeout_secs``: 503 when unhandled."""


class TransactionAborted(DatabaseError):
    """An earlier statement of the transaction failed; only a rollback is possible now."""


class InterfaceError(DatabaseError):
    """The pool or transaction was used after it was closed or finished."""


class RedisError(DatabaseError):
    """An error reply or failure from Redis."""


class RedisUnavailable(RedisError):
    """Redis did not answer (refused, timed out, connection lost): 503 when unhandled."""

    status_code = 503


_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        DatabaseError,
        IntegrityError,
        UniqueViolation,
        ForeignKeyViolation,
        NotNullViolation,
        CheckViolation,
        OperationalError,
        PoolTimeout,
        TransactionAborted,
        InterfaceError,
        RedisError,
        RedisUnavailable,
    )
}


def _make_error(kind: str, message: str, sqlstate: str | None, constraint: str | None) -> Exception:
    """Called from Rust: the exception for a data-layer error."""
    if kind == "FeatureNotAvailable":
        return FeatureNotAvailable(message, 14, hint="connect to the master's URL instead")
    cls = _ERRORS.get(kind, DatabaseError)
    return cls(message, sqlstate, constraint)


def problem_for(exc: BaseException) -> tuple[int, str, dict[str, Any]] | None:
    """(status, detail, extensions) of an unhandled data-layer error, for problem+json."""
    if not isinstance(exc, DatabaseError):
        return None
    status = exc.status_code
    extra: dict[str, Any] = {}
    if isinstance(exc, IntegrityError):
        detail = exc.message
        if exc.constraint:
            extra["constraint"] = exc.constraint
        if exc.sqlstate:
            extra["sqlstate"] = exc.sqlstate
    elif status == 503:
        detail = "the database is unavailable" if not isinstance(exc, RedisError) else "Redis is unavailable"
        if isinstance(exc, PoolTimeout):
            detail = "no database connection became free in time"
    else:
        detail = "internal server error"
    return status, detail, extra


# ---- the loop's executor ----------------------------------------------------------------------

_executors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _executor() -> Any:
    """The Rust executor attached to the running loop (one per loop)."""
    loop = asyncio.get_running_loop()
    ex = _executors.get(loop)
    if ex is None or loop.is_closed():
        ex = _cello.Executor.start(loop)
        _executors[loop] = ex
    return ex


class Json:
    """Send ``value`` as JSON (a list is otherwise a PostgreSQL array)."""

    __cello_json__ = True
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Json({self.value!r})"


# ---- SQL ------------------------------------------------------------------------------------

_current_tx: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar("cello_tx", default=None)
_default_db: Database | None = None


def _config_of(config: DatabaseConfig | str | None) -> DatabaseConfig:
    if config is None:
        return DatabaseConfig(DEFAULT_URL)
    if isinstance(config, str):
        return DatabaseConfig(config)
    if isinstance(config, DatabaseConfig):
        return config
    raise TypeError(f"expected a DatabaseConfig or a URL, not {type(config).__name__}")


class Database:
    """A connection pool. ``Database(config)`` opens it on first use; ``await
    Database.connect(config)`` opens it now."""

    def __init__(self, config: DatabaseConfig | str | None = None, *, name: str = "default", lazy: bool = True) -> None:
        self.config = _config_of(config)
        self.name = name
        self._lazy = lazy
        self._pool: Any = None
        self._opening: asyncio.Future | None = None
        self._closed = False
        scheme = self.config.url.split(":", 1)[0].lower()
        if scheme not in ("postgres", "postgresql", "mysql", "mariadb", "sqlite"):
            raise ValueError(f"unsupported database URL {self.config.url!r}: use postgresql://, mysql:// or sqlite://")

    @classmethod
    def connect(cls, config: DatabaseConfig | str | None = None) -> _Connecting:
        """Open a pool now: ``db = await Database.connect(config)``."""
        return _Connecting(cls(config, lazy=False))

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def backend(self) -> str:
        """``postgresql``, ``mysql`` or ``sqlite``."""
        scheme = self.config.url.split(":", 1)[0].lower()
        return {"postgres": "postgresql", "mariadb": "mysql"}.get(scheme, scheme)

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._closed:
            raise InterfaceError("the database pool is closed")
        loop = asyncio.get_running_loop()
        if self._opening is None or self._opening.get_loop() is not loop or self._opening.cancelled():
            c = self.config
            self._opening = asyncio.ensure_future(
                _cello.SqlPool.connect(
                    _executor(),
                    c.url,
                    int(c.pool_size),
                    int(c.min_idle),
                    float(c.max_lifetime_secs),
                    float(c.connection_timeout_secs),
                    float(c.idle_timeout_secs),
                    c.application_name,
                    self._lazy,
                    self.name,
                )
            )
        try:
            pool = await asyncio.shield(self._opening)
        except BaseException:
            if self._opening is not None and self._opening.done():
                self._opening = None
            raise
        self._pool = pool
        return pool

    def _tx(self) -> Transaction | None:
        # The open transaction of this task. A task spawned inside the block inherits the
        # context variable but not the transaction: it runs on a pooled connection of its
        # own (the transaction's connection serves one task, as its isolation promises).
        tx = _current_tx.get()
        if tx is not None and tx._db is self and tx._active and tx._task is asyncio.current_task():
            return tx
        return None

    async def _run(self, query: str, params: Sequence[Any], op: str, tuples: bool = False) -> Any:
        tx = self._tx()
        if tx is not None:
            return await tx._run(query, params, op, tuples)
        pool = await self._get_pool()
        return await pool.run(_executor(), query, params, op, tuples)

    async def fetch_all(self, query: str, *params: Any, tuples: bool = False) -> list[Any]:
        """Every row: ``Record``s (dicts that also index by position), or tuples."""
        return await self._run(query, params, "all", tuples)

    async def fetch_one(self, query: str, *params: Any, tuples: bool = False) -> Any:
        """The first row, or None."""
        return await self._run(query, params, "one", tuples)

    async def fetch_val(self, query: str, *params: Any) -> Any:
        """The first column of the first row, or None."""
        return await self._run(query, params, "val")

    async def execute(self, query: str, *params: Any) -> int:
        """Run a statement; the number of rows affected."""
        return await self._run(query, params, "exec")

    async def execute_many(self, query: str, params: Iterable[Sequence[Any]]) -> int:
        """Run a statement once per parameter list, in one transaction; rows affected in all."""
        batches = [list(p) for p in params]
        tx = self._tx()
        if tx is not None:
            return await tx.execute_many(query, batches)
        pool = await self._get_pool()
        return await pool.run_many(_executor(), query, batches)

    def begin(self) -> Transaction:
        """A transaction: ``async with db.begin() as tx:`` or ``tx = await db.begin()``.
        Inside an open one, a nested transaction (a SAVEPOINT)."""
        outer = self._tx()
        return Transaction(self, outer)

    transaction = begin

    async def ping(self) -> bool:
        pool = await self._get_pool()
        await pool.ping(_executor())
        return True

    def stats(self) -> dict[str, Any]:
        """Pool figures: size, idle, in_use, max, acquired, wait_seconds, timeouts."""
        if self._pool is None:
            return {"backend": self.backend, "max": int(self.config.pool_size), "size": 0, "idle": 0, "in_use": 0}
        return self._pool.stats()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        self._closed = True
        if pool is not None:
            await pool.close(_executor())

    def __repr__(self) -> str:
        return f"<Database {self.backend} {self.name!r}>"


class _Connecting:
    """``Database.connect(...)``: awaitable (opens the pool), or usable at once (lazily)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __await__(self) -> Any:
        async def open_() -> Database:
            await self._db._get_pool()
            return self._db

        return open_().__await__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


class Transaction:
    """A transaction on one connection; nested ones are SAVEPOINTs. As an async context
    manager it commits on success and rolls back on an exception (also on cancellation:
    a handler timeout or a client that went away)."""

    def __init__(self, db: Database, parent: Transaction | None = None) -> None:
        self._db = db
        self._parent = parent
        self._root: Transaction = parent._root if parent is not None else self
        self._raw: Any = None  # the root's SqlTx
        self._savepoint: str | None = None
        self._children = 0
        self._active = False
        self._done = False
        self._token: contextvars.Token | None = None
        self._task: asyncio.Task | None = None

    @property
    def is_active(self) -> bool:
        return self._active

    @property
    def depth(self) -> int:
        return 0 if self._parent is None else self._parent.depth + 1

    async def start(self) -> Transaction:
        if self._active or self._done:
            raise InterfaceError("this transaction has already been started")
        if self._parent is None:
            pool = await self._db._get_pool()
            self._raw = await pool.begin(_executor())
        else:
            if not self._parent._active:
                raise InterfaceError("the outer transaction is no longer active")
            self._root._children += 1
            name = f"cello_sp_{self._root._children}"
            await self._root._raw.savepoint(_executor(), "create", name)
            self._savepoint = name
        self._task = asyncio.current_task()
        self._active = True
        return self

    def __await__(self) -> Any:
        # ``tx = await db.begin()``: started; the caller commits or rolls back. Queries on
        # ``db`` inside the calling task use it too.
        async def go() -> Transaction:
            await self.start()
            self._token = None
            _current_tx.set(self)
            return self

        return go().__await__()

    async def __aenter__(self) -> Transaction:
        if not self._active:
            await self.start()
        self._token = _current_tx.set(self)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._token is not None:
            try:
                _current_tx.reset(self._token)
            except ValueError:  # exited in another context
                pass
            self._token = None
        if not self._active:
            return False
        if exc_type is None:
            await self.commit()
        else:
            try:
                await self.rollback()
            except BaseException:
                self._abandon()
                if exc_type is not None and issubclass(exc_type, BaseException):
                    return False
                raise
        return False

    def _abandon(self) -> None:
        """Stop using the connection now; Rust rolls it back and returns it to the pool."""
        self._active = False
        self._done = True
        if self._parent is None and self._raw is not None:
            self._raw.abandon()

    def _leave(self) -> None:
        self._active = False
        self._done = True
        if _current_tx.get() is self:
            _current_tx.set(self._parent if self._parent is not None and self._parent._active else None)

    async def commit(self) -> None:
        if not self._active:
            raise InterfaceError("the transaction is not active")
        try:
            if self._parent is None:
                await self._raw.commit(_executor())
            else:
                await self._root._raw.savepoint(_executor(), "release", self._savepoint)
        finally:
            self._leave()

    async def rollback(self) -> None:
        if not self._active:
            raise InterfaceError("the transaction is not active")
        try:
            if self._parent is None:
                await self._raw.rollback(_executor())
            else:
                raw = self._root._raw
                await raw.savepoint(_executor(), "rollback_to", self._savepoint)
                await raw.savepoint(_executor(), "release", self._savepoint)
        finally:
            self._leave()

    async def _run(self, query: str, params: Sequence[Any], op: str, tuples: bool = False) -> Any:
        if not self._active:
            raise InterfaceError("the transaction is not active")
        return await self._root._raw.run(_executor(), query, params, op, tuples)

    async def fetch_all(self, query: str, *params: Any, tuples: bool = False) -> list[Any]:
        return await self._run(query, params, "all", tuples)

    async def fetch_one(self, query: str, *params: Any, tuples: bool = False) -> Any:
        return await self._run(query, params, "one", tuples)

    async def fetch_val(self, query: str, *params: Any) -> Any:
        return await self._run(query, params, "val")

    async def execute(self, query: str, *params: Any) -> int:
        return await self._run(query, params, "exec")

    async def execute_many(self, query: str, params: Iterable[Sequence[Any]]) -> int:
        if not self._active:
            raise InterfaceError("the transaction is not active")
        return await self._root._raw.run_many(_executor(), query, [list(p) for p in params])

    def begin(self) -> Transaction:
        """A nested transaction (SAVEPOINT)."""
        return Transaction(self._db, self)

    def __repr__(self) -> str:
        state = "active" if self._active else ("done" if self._done else "new")
        return f"<Transaction depth={self.depth} {state}>"


def transactional(func: Callable[..., Any] | None = None, *, database: Database | str | None = None) -> Any:
    """Run an async function inside ``db.begin()``: committed when it returns, rolled back
    when it raises. The database: ``database=`` (an instance or a singleton name), else a
    ``Database`` among the arguments, else the app's (``enable_database``)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("@transactional needs an async function")

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            db = _pick_database(database, args, kwargs)
            async with db.begin():
                return await fn(*args, **kwargs)

        return wrapper

    if func is not None and callable(func) and not isinstance(func, (Database, str)):
        return decorate(func)
    if isinstance(func, (Database, str)):
        database = func
    return decorate


def _pick_database(database: Database | str | None, args: tuple, kwargs: dict) -> Database:
    if isinstance(database, Database):
        return database
    if isinstance(database, str):
        db = _named.get(database)
        if db is None:
            raise LookupError(f"@transactional(database={database!r}): no database registered under that name")
        return db
    for value in (*args, *kwargs.values()):
        if isinstance(value, Database):
            return value
    if _default_db is None:
        raise LookupError("@transactional: no database (call app.enable_database() or pass database=...)")
    return _default_db


_named: dict[str, Database] = {}


# ---- migrations -------------------------------------------------------------------------------


async def migrate(db: Database, directory: Any, table: str = "cello_migrations") -> list[str]:
    """Apply the ``NNN_name.sql`` files of ``directory`` not yet recorded in ``table``, in
    order, each in its own transaction; returns the names applied. ``NNN_name.<backend>.sql``
    (``postgresql``, ``mysql``, ``sqlite``) replaces ``NNN_name.sql`` on that backend.
    Statements are split at a ``;`` that ends a line."""
    from pathlib import Path

    if not table.replace("_", "").isalnum():
        raise ValueError(f"bad migrations table name {table!r}")
    files: dict[str, Path] = {}
    for path in sorted(Path(directory).glob("*.sql")):
        parts = path.name[: -len(".sql")].split(".")
        if len(parts) == 1:
            files.setdefault(parts[0], path)
        elif len(parts) == 2 and parts[1] == db.backend:
            files[parts[0]] = path
    await db.execute(f"CREATE TABLE IF NOT EXISTS {table} (name VARCHAR(200) PRIMARY KEY, applied_at VARCHAR(40))")
    done = {r[0] for r in await db.fetch_all(f"SELECT name FROM {table}", tuples=True)}
    applied = []
    for name in sorted(files):
        if name in done:
            continue
        sql = files[name].read_text()
        statements = [s.strip() for s in sql.replace("\r\n", "\n").split(";\n")]
        async with db.begin():
            for stmt in statements:
                stmt = stmt.rstrip(";").strip()
                if stmt and not all(line.strip().startswith("--") for line in stmt.splitlines() if line.strip()):
                    await db.execute(stmt)
            from datetime import datetime, timezone

            await db.execute(
                f"INSERT INTO {table} (name, applied_at) VALUES ($1, $2)", name, datetime.now(timezone.utc).isoformat()
            )
        applied.append(name)
    return applied


# ---- Redis ------------------------------------------------------------------------------------


def _redis_config_of(config: RedisConfig | str | None) -> RedisConfig:
    if config is None:
        return RedisConfig()
    if isinstance(config, str):
        return RedisConfig(url=config)
    if isinstance(config, RedisConfig):
        return config
    raise TypeError(f"expected a RedisConfig or a URL, not {type(config).__name__}")


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, (int, float)):
        return repr(value).encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (dict, list, tuple)):
        return _json.dumps(value, separators=(",", ":"), default=str).encode()
    raise TypeError(f"cannot send a {type(value).__name__} to Redis (use str, bytes, int, float, dict or list)")


def _to_bool(v: Any) -> bool:
    return bool(v)


def _pairs_to_dict(v: Any) -> dict:
    if isinstance(v, dict):
        return v
    if not v:
        return {}
    return dict(zip(v[0::2], v[1::2], strict=False))


def _ttl_args(ttl: Any) -> list[bytes]:
    if ttl is None:
        return []
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    if isinstance(ttl, float) and not ttl.is_integer():
        return [b"PX", str(max(1, int(ttl * 1000))).encode()]
    if int(ttl) <= 0:
        raise ValueError("ttl must be positive")
    return [b"EX", str(int(ttl)).encode()]


class _Commands:
    """The command set; each method builds the command and how to read its reply.
    ``Redis`` runs it now, ``Pipeline`` queues it."""

    _prefix: str
    _default_ttl: int | None

    def _command(self, args: list[Any], post: Callable[[Any], Any] | None = None, **kw: Any) -> Any:
        raise NotImplementedError

    def _k(self, key: Any) -> bytes:
        k = _arg(key)
        return self._prefix.encode() + k if self._prefix else k

    def get(self, key: Any, *, decode: bool | None = None) -> Any:
        return self._command([b"GET", self._k(key)], decode=decode)

    def set(self, key: Any, value: Any, ttl: Any = None, *, nx: bool = False, xx: bool = False) -> Any:
        """``ttl`` in seconds (int, float or timedelta); None uses ``default_ttl``. True when set."""
        args = [b"SET", self._k(key), _arg(value)]
        args += _ttl_args(ttl if ttl is not None else self._default_ttl)
        if nx:
            args.append(b"NX")
        if xx:
            args.append(b"XX")
        return self._command(args, lambda v: v is True or v == "OK" or v == b"OK")

    def delete(self, *keys: Any) -> Any:
        return self._command([b"DEL", *(self._k(k) for k in keys)])

    def exists(self, *keys: Any) -> Any:
        """One key: a bool; several: how many exist."""
        post = _to_bool if len(keys) == 1 else None
        return self._command([b"EXISTS", *(self._k(k) for k in keys)], post)

    def incr(self, key: Any, amount: int = 1) -> Any:
        return self._command([b"INCRBY", self._k(key), _arg(int(amount))])

    def decr(self, key: Any, amount: int = 1) -> Any:
        return self._command([b"DECRBY", self._k(key), _arg(int(amount))])

    def expire(self, key: Any, seconds: Any) -> Any:
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        return self._command([b"EXPIRE", self._k(key), _arg(int(seconds))], _to_bool)

    def ttl(self, key: Any) -> Any:
        return self._command([b"TTL", self._k(key)])

    def hget(self, key: Any, field: Any, *, decode: bool | None = None) -> Any:
        return self._command([b"HGET", self._k(key), _arg(field)], decode=decode)

    def hset(self, key: Any, field: Any = None, value: Any = None, mapping: dict | None = None) -> Any:
        """``hset(key, field, value)`` and/or ``hset(key, mapping={...})``: fields added."""
        args = [b"HSET", self._k(key)]
        if field is not None:
            args += [_arg(field), _arg(value)]
        for f, v in (mapping or {}).items():
            args += [_arg(f), _arg(v)]
        if len(args) == 2:
            raise ValueError("hset needs a field and value or a mapping")
        return self._command(args)

    def hdel(self, key: Any, *fields: Any) -> Any:
        return self._command([b"HDEL", self._k(key), *(_arg(f) for f in fields)])

    def hgetall(self, key: Any, *, decode: bool | None = None) -> Any:
        """Every field as a dict (``{}`` for a missing key)."""
        return self._command([b"HGETALL", self._k(key)], _pairs_to_dict, decode=decode)

    def lpush(self, key: Any, *values: Any) -> Any:
        return self._command([b"LPUSH", self._k(key), *(_arg(v) for v in values)])

    def rpush(self, key: Any, *values: Any) -> Any:
        return self._command([b"RPUSH", self._k(key), *(_arg(v) for v in values)])

    def lpop(self, key: Any, *, decode: bool | None = None) -> Any:
        return self._command([b"LPOP", self._k(key)], decode=decode)

    def rpop(self, key: Any, *, decode: bool | None = None) -> Any:
        return self._command([b"RPOP", self._k(key)], decode=decode)

    def lrange(self, key: Any, start: int = 0, end: int = -1, *, decode: bool | None = None) -> Any:
        return self._command([b"LRANGE", self._k(key), _arg(int(start)), _arg(int(end))], decode=decode)

    def sadd(self, key: Any, *members: Any) -> Any:
        return self._command([b"SADD", self._k(key), *(_arg(m) for m in members)])

    def srem(self, key: Any, *members: Any) -> Any:
        return self._command([b"SREM", self._k(key), *(_arg(m) for m in members)])

    def smembers(self, key: Any, *, decode: bool | None = None) -> Any:
        return self._command([b"SMEMBERS", self._k(key)], set, decode=decode)

    def sismember(self, key: Any, member: Any) -> Any:
        return self._command([b"SISMEMBER", self._k(key), _arg(member)], _to_bool)

    def publish(self, channel: Any, message: Any) -> Any:
        """Subscribers that received it. Channels are not keys: no ``key_prefix``."""
        return self._command([b"PUBLISH", _arg(channel), _arg(message)])

    def _script_args(self, keys: Any, args: Sequence[Any]) -> list[bytes]:
        # redis-py's style eval(script, numkeys, *keys_and_args) or eval(script, keys=[], args=[]).
        if isinstance(keys, int) and not isinstance(keys, bool):
            n = keys
            ks, rest = list(args[:n]), list(args[n:])
        else:
            ks, rest = list(keys or ()), list(args)
        return [_arg(len(ks)), *(self._k(k) for k in ks), *(_arg(a) for a in rest)]

    def eval(self, script: str, keys: Any = (), *args: Any, **kw: Any) -> Any:
        """``eval(script, keys=[...], args=[...])`` or ``eval(script, numkeys, *keys_and_args)``;
        keys get the ``key_prefix``."""
        if "args" in kw:
            args = tuple(kw.pop("args") or ())
        return self._command([b"EVAL", _arg(script), *self._script_args(keys, args)], **kw)

    def evalsha(self, sha: str, keys: Any = (), *args: Any, **kw: Any) -> Any:
        if "args" in kw:
            args = tuple(kw.pop("args") or ())
        return self._command([b"EVALSHA", _arg(sha), *self._script_args(keys, args)], **kw)

    def script_load(self, script: str) -> Any:
        return self._command([b"SCRIPT", b"LOAD", _arg(script)], decode=True)

    def execute_command(self, *args: Any, decode: bool | None = None) -> Any:
        """Any command, as given (no ``key_prefix``)."""
        return self._command([_arg(a) for a in args], decode=decode)


class Redis(_Commands):
    """A Redis client (pooled, reconnecting; Redis Cluster with ``cluster_mode``). Values
    come back as ``str``; ``decode=False`` gives ``bytes``. Every key gets ``key_prefix``;
    ``set`` without a ``ttl`` uses ``default_ttl``."""

    def __init__(self, config: RedisConfig | str | None = None, *, decode: bool = True) -> None:
        self.config = _redis_config_of(config)
        c = self.config
        self._prefix = c.key_prefix or ""
        self._default_ttl = c.default_ttl
        self._decode = decode
        self._client = _cello.RedisClient(
            c.url,
            int(c.pool_size),
            float(c.connection_timeout_secs),
            bool(c.cluster_mode),
            int(c.database),
            c.password,
            bool(c.tls),
            int(c.min_idle),
            float(c.idle_timeout_secs),
        )

    @classmethod
    def connect(cls, config: RedisConfig | str | None = None, *, decode: bool = True) -> _RedisConnecting:
        """``r = await Redis.connect(config)`` (checks the server answers)."""
        return _RedisConnecting(cls(config, decode=decode))

    @property
    def key_prefix(self) -> str:
        return self._prefix

    def open_connections(self) -> int:
        """Connections open now (``min_idle`` stay; others close after ``idle_timeout_secs``)."""
        return self._client.open_connections()

    async def _send(self, args: list[bytes], post: Callable[[Any], Any] | None, decode: bool | None) -> Any:
        d = self._decode if decode is None else decode
        out = await self._client.cmd(_executor(), args, d)
        return post(out) if post is not None else out

    def _command(self, args: list[Any], post: Callable[[Any], Any] | None = None, decode: bool | None = None) -> Any:
        return self._send(args, post, decode)

    async def ping(self) -> bool:
        return (await self._client.cmd(_executor(), [b"PING"], True)) in ("PONG", True)

    def pipeline(self, transaction: bool = False) -> Pipeline:
        """Queue commands, then ``await pipe.execute()``: one round trip (``transaction``:
        MULTI/EXEC)."""
        return Pipeline(self, transaction)

    def subscribe(self, *channels: str) -> Subscription:
        """``async for msg in redis.subscribe("chan"):`` (``await`` it first to be subscribed
        before publishing)."""
        return Subscription(self, list(channels), [])

    def psubscribe(self, *patterns: str) -> Subscription:
        return Subscription(self, [], list(patterns))

    async def close(self) -> None:
        # Connections close when the client is dropped; later commands fail.
        self._client = _ClosedClient()

    def __repr__(self) -> str:
        return f"<Redis {self.config.url} prefix={self._prefix!r}>"


class _ClosedClient:
    def __getattr__(self, name: str) -> Any:
        raise InterfaceError("the Redis client is closed")


class _RedisConnecting:
    def __init__(self, r: Redis) -> None:
        self._r = r

    def __await__(self) -> Any:
        async def go() -> Redis:
            await self._r.ping()
            return self._r

        return go().__await__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._r, name)


class Pipeline(_Commands):
    """Queued commands; ``await execute()`` sends them in one round trip."""

    def __init__(self, redis: Redis, transaction: bool = False) -> None:
        self._redis = redis
        self._prefix = redis._prefix
        self._default_ttl = redis._default_ttl
        self._transaction = transaction
        self._queued: list[tuple[list[bytes], Callable[[Any], Any] | None]] = []

    def _command(self, args: list[Any], post: Callable[[Any], Any] | None = None, decode: bool | None = None) -> Any:
        self._queued.append((args, post))
        return self

    def __len__(self) -> int:
        return len(self._queued)

    async def execute(self) -> list[Any]:
        queued, self._queued = self._queued, []
        if not queued:
            return []
        r = self._redis
        if r.config.cluster_mode and not self._transaction:
            # A cluster pipeline may cross hash slots (nodes): send each command to its node,
            # all at once. (MULTI/EXEC stays one slot, as Redis Cluster requires.)
            replies = await asyncio.gather(
                *(r._client.cmd(_executor(), a, r._decode) for a, _ in queued), return_exceptions=True
            )
        else:
            replies = await r._client.pipeline(_executor(), [a for a, _ in queued], self._transaction, r._decode)
        out = []
        for (_, post), value in zip(queued, replies, strict=False):
            if isinstance(value, BaseException) or post is None:
                out.append(value)
            else:
                out.append(post(value))
        return out

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._queued = []


class PubSubMessage:
    """A message: ``channel``, ``data``, ``pattern`` (``msg["data"]`` works too)."""

    __slots__ = ("channel", "data", "pattern")

    def __init__(self, channel: str, pattern: str | None, data: Any) -> None:
        self.channel = channel
        self.pattern = pattern
        self.data = data

    @property
    def type(self) -> str:
        return "pmessage" if self.pattern is not None else "message"

    def __getitem__(self, key: str) -> Any:
        if key == "type":
            return self.type
        if key in ("channel", "data", "pattern"):
            return getattr(self, key)
        raise KeyError(key)

    def __repr__(self) -> str:
        return f"PubSubMessage(channel={self.channel!r}, data={self.data!r})"


class Subscription:
    """An async iterator of ``PubSubMessage``s on a connection of its own."""

    def __init__(self, redis: Redis, channels: list[str], patterns: list[str]) -> None:
        self._redis = redis
        self._channels = channels
        self._patterns = patterns
        self._raw: Any = None
        self._closed = False

    async def _ensure(self) -> Any:
        if self._raw is None:
            self._raw = await self._redis._client.subscribe(_executor(), self._channels, self._patterns)
        return self._raw

    def __await__(self) -> Any:
        async def go() -> Subscription:
            await self._ensure()
            return self

        return go().__await__()

    def __aiter__(self) -> AsyncIterator[PubSubMessage]:
        return self

    async def __anext__(self) -> PubSubMessage:
        if self._closed:
            raise StopAsyncIteration
        raw = await self._ensure()
        item = await raw.next(_executor(), self._redis._decode)
        if item is None:
            self._closed = True
            raise StopAsyncIteration
        channel, pattern, data = item
        return PubSubMessage(channel, pattern, data)

    async def get_message(self, timeout: float | None = None) -> PubSubMessage | None:
        """The next message, or None after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except (asyncio.TimeoutError, StopAsyncIteration):
            return None

    async def aclose(self) -> None:
        self._closed = True
        if self._raw is not None:
            self._raw.close()

    close = aclose

    async def __aenter__(self) -> Subscription:
        await self._ensure()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


# ---- App integration --------------------------------------------------------------------------


def enable_database(app: Any, config: DatabaseConfig | str | None = None, *, name: str = "database") -> Database:
    """``app.enable_database``: the pool (SQLite ``cello.db`` by default) as ``app.database``
    and the singleton ``database``; opened at startup, closed at shutdown; a ``database``
    readiness check."""
    global _default_db
    from . import observability

    db = Database(config, name="default" if name == "database" else name)
    app.register_singleton(name, db)
    _named[name] = db
    if name == "database":
        app.database = db
        _default_db = db

    async def open_pool() -> None:
        db._closed = False
        await db._get_pool()

    async def close_pool() -> None:
        await db.close()

    app.on_event("startup")(open_pool)
    app.on_event("shutdown")(close_pool)

    async def check() -> tuple[bool, str | None]:
        await asyncio.wait_for(db.ping(), max(0.5, float(db.config.connection_timeout_secs)))
        return True, None

    observability.register_builtin_check(name, check)
    return db


def enable_redis(app: Any, config: RedisConfig | str | None = None) -> Redis:
    """``app.enable_redis``: ``app.redis``, ``request.redis`` and the singleton ``redis``."""
    from . import observability

    r = Redis(config)
    app.register_singleton("redis", r)
    app.redis = r

    async def check() -> bool:
        return await asyncio.wait_for(r.ping(), max(0.5, float(r.config.connection_timeout_secs)))

    observability.register_builtin_check("redis", check)
    return r


def attach_to_requests(app: Any, endpoints: list[Callable[[Any], Any]]) -> list[Callable[[Any], Any]]:
    """With ``enable_redis``: every request gets ``request.redis``."""
    r = app._singletons.get("redis")
    if not isinstance(r, Redis):
        return endpoints

    def wrap(endpoint: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def with_redis(request: Any) -> Any:
            request.redis = r
            return endpoint(request)

        return with_redis

    return [wrap(e) for e in endpoints]


__all__ = [
    "CheckViolation",
    "Database",
    "DatabaseConfig",
    "DatabaseError",
    "FeatureNotAvailable",
    "ForeignKeyViolation",
    "IntegrityError",
    "InterfaceError",
    "Json",
    "NotNullViolation",
    "OperationalError",
    "Pipeline",
    "PoolTimeout",
    "PubSubMessage",
    "Record",
    "Redis",
    "RedisConfig",
    "RedisError",
    "RedisUnavailable",
    "Subscription",
    "Transaction",
    "TransactionAborted",
    "UniqueViolation",
    "migrate",
    "transactional",
]
