"""``cello.saga``: multi-step workflows with compensation, retries and persisted state.

An execution's state (status, context, each step's status, attempts and error) is written to
the saga store before and after every step, so a process that dies mid-saga is picked up by
``SagaOrchestrator.resume_pending()`` on the next start: steps already completed are not run
again; a step that was running when the process died is re-run only when it is marked
``idempotent=True`` — otherwise the saga is compensated. Compensations run in reverse order;
one that fails is recorded (``compensation_failed``) and reported, never swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from .config import SagaConfig
from .errors import FeatureNotAvailable

__all__ = [
    "FeatureNotAvailable",
    "Saga",
    "SagaError",
    "SagaExecution",
    "SagaOrchestrator",
    "SagaResult",
    "SagaStatus",
    "SagaStep",
    "StepStatus",
]

log = logging.getLogger("cello.saga")


class SagaError(Exception):
    """A saga failure. Raised by a step, it fails the step at once (no retries)."""


class StepStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"

    def __str__(self) -> str:
        return self.value


class SagaStatus(str, enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"

    def __str__(self) -> str:
        return self.value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class SagaStep:
    """``action(context)`` and its ``compensate(context)`` (sync or async). ``timeout``: seconds
    per attempt; ``retries``: extra attempts (default ``SagaConfig.max_retries``);
    ``idempotent``: may be re-run after a crash during the step."""

    def __init__(
        self,
        name: str,
        action: Callable[..., Any],
        compensate: Callable[..., Any] | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        idempotent: bool = False,
    ) -> None:
        if not callable(action):
            raise TypeError("SagaStep action must be callable")
        if compensate is not None and not callable(compensate):
            raise TypeError("SagaStep compensate must be callable")
        if timeout is not None and timeout <= 0:
            raise ValueError("SagaStep timeout must be positive (seconds)")
        if retries is not None and retries < 0:
            raise ValueError("SagaStep retries must be >= 0")
        self.name = str(name)
        self.action = action
        self.compensate = compensate
        self.timeout = timeout
        self.retries = retries
        self.idempotent = bool(idempotent)

    def __repr__(self) -> str:
        return f"SagaStep({self.name!r})"


class Saga:
    """A named, ordered list of steps: ``Saga("order", [SagaStep(...), ...])`` or
    ``saga.step(name, action, compensate)`` chained."""

    def __init__(self, name: str, steps: Iterable[SagaStep] | None = None) -> None:
        self.name = str(name)
        self.steps: list[SagaStep] = list(steps or [])
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"saga {name!r}: step names must be unique")

    def add_step(self, step: SagaStep) -> Saga:
        if any(s.name == step.name for s in self.steps):
            raise ValueError(f"saga {self.name!r} already has a step {step.name!r}")
        self.steps.append(step)
        return self

    def step(
        self, name: str, action: Callable[..., Any], compensate: Callable[..., Any] | None = None, **kw: Any
    ) -> Saga:
        return self.add_step(SagaStep(name, action, compensate, **kw))

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, {[s.name for s in self.steps]})"


class SagaResult:
    """How an execution ended: ``status`` (``completed``, ``compensated``,
    ``compensation_failed``), ``success``, ``context``, ``error`` (what failed),
    ``compensation_errors`` ({step: error})."""

    def __init__(self, execution: SagaExecution) -> None:
        self.execution_id = execution.execution_id
        self.saga_name = execution.saga_name
        self.status = SagaStatus(execution.status)
        self.success = self.status is SagaStatus.COMPLETED
        self.context = execution.context
        self.error = execution.error
        self.steps = [dict(s) for s in execution.steps]
        self.compensation_errors = {
            s["name"]: s.get("compensation_error")
            for s in execution.steps
            if s["status"] == StepStatus.COMPENSATION_FAILED.value
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "saga": self.saga_name,
            "status": self.status.value,
            "success": self.success,
            "error": self.error,
            "context": self.context,
            "steps": self.steps,
            "compensation_errors": self.compensation_errors,
        }

    def __repr__(self) -> str:
        return f"SagaResult({self.status.value}, id={self.execution_id}, error={self.error!r})"


async def _call(fn: Callable[..., Any], context: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(context)
    result = await asyncio.to_thread(fn, context)
    if inspect.isawaitable(result):
        result = await result
    return result


class SagaExecution:
    """One run of a saga, persisted in ``store`` after every step."""

    def __init__(
        self,
        saga: Saga,
        execution_id: str | None = None,
        config: SagaConfig | None = None,
        store: Any = None,
    ) -> None:
        self.saga = saga
        self.saga_name = saga.name
        self.execution_id = execution_id or str(uuid.uuid4())
        self.config = config if config is not None else SagaConfig()
        self.store = store if store is not None else MemorySagaStore()
        self.status = SagaStatus.RUNNING.value
        self.context: dict[str, Any] = {}
        self.error: str | None = None
        self.steps: list[dict[str, Any]] = [self._fresh(s.name) for s in saga.steps]
        self.created_at = _now()
        self.updated_at = self.created_at
        # Called with the execution after each persisted change (the orchestrator's listeners).
        self.listeners: list[Callable[[SagaExecution], Any]] = []
        # Who runs it, and until when (epoch seconds) others must leave it alone.
        self.owner: str | None = None
        self.lease_secs: float = 0.0
        self.lease_until: float = 0.0

    @staticmethod
    def _fresh(name: str) -> dict[str, Any]:
        return {"name": name, "status": StepStatus.PENDING.value, "attempts": 0, "error": None,
                "compensation_error": None, "started_at": None, "finished_at": None}  # fmt: skip

    # ---- persistence ------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.execution_id,
            "saga_name": self.saga_name,
            "status": self.status,
            "context": self.context,
            "steps": self.steps,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "owner": self.owner,
            "lease_until": self.lease_until,
        }

    @classmethod
    def from_record(cls, saga: Saga, record: dict[str, Any], config: SagaConfig | None, store: Any) -> SagaExecution:
        ex = cls(saga, record["id"], config, store)
        ex.status = record["status"]
        ex.context = dict(record.get("context") or {})
        ex.error = record.get("error")
        ex.created_at = record.get("created_at") or ex.created_at
        ex.owner = record.get("owner")
        ex.lease_until = float(record.get("lease_until") or 0.0)
        stored = {s["name"]: s for s in record.get("steps") or []}
        ex.steps = [{**cls._fresh(s.name), **stored.get(s.name, {})} for s in saga.steps]
        return ex

    async def _save(self) -> None:
        self.updated_at = _now()
        running = self.status in (SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value)
        self.lease_until = time.time() + self.lease_secs if running and self.lease_secs else 0.0
        # Round-trip through JSON now, so a context that cannot be stored fails here, loudly.
        await self.store.save(json.loads(json.dumps(self.to_record())))
        for listener in list(self.listeners):
            result = listener(self)
            if inspect.isawaitable(result):
                await result

    def _log(self, msg: str, *args: Any) -> None:
        if self.config.enable_logging:
            log.info("saga %s %s: " + msg, self.saga_name, self.execution_id, *args)

    # ---- running ----------------------------------------------------------------------------

    async def run(self, context: dict[str, Any] | None = None) -> SagaResult:
        """Run (or continue) the saga; compensates when a step fails for good."""
        if not self.lease_secs or self.owner is None:
            return await self._run(context)
        # Renew the lease while a long step runs, so no other process resumes this execution.
        heartbeat = asyncio.ensure_future(self._heartbeat())
        try:
            return await self._run(context)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await heartbeat

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.lease_secs / 3))
            with contextlib.suppress(Exception):  # the next save or renewal tries again
                await self.store.renew(self.execution_id, self.owner, time.time() + self.lease_secs)

    async def _run(self, context: dict[str, Any] | None) -> SagaResult:
        if context is not None:
            self.context.update(context)
        deadline = time.monotonic() + float(self.config.timeout_ms) / 1000.0
        if self.status in (SagaStatus.COMPENSATING.value, SagaStatus.COMPENSATION_FAILED.value):
            await self._compensate()
            return SagaResult(self)
        if self.status != SagaStatus.RUNNING.value:
            return SagaResult(self)
        await self._save()
        for step, state in zip(self.saga.steps, self.steps, strict=True):
            if state["status"] == StepStatus.COMPLETED.value:
                continue
            if state["status"] == StepStatus.RUNNING.value and not step.idempotent:
                # The process stopped during this step: it may have run; not safe to repeat.
                state["status"] = StepStatus.FAILED.value
                state["error"] = "interrupted: the process stopped during this step (not idempotent, not re-run)"
                self.error = f"step {step.name!r} {state['error']}"
                self._log("%s", self.error)
                await self._compensate(include_failed=step.name)
                return SagaResult(self)
            ok = await self._run_step(step, state, deadline)
            if not ok:
                await self._compensate()
                return SagaResult(self)
        self.status = SagaStatus.COMPLETED.value
        await self._save()
        self._log("completed")
        return SagaResult(self)

    async def _run_step(self, step: SagaStep, state: dict[str, Any], deadline: float) -> bool:
        retries = int(self.config.max_retries if step.retries is None else step.retries)
        delay = float(self.config.retry_delay_ms) / 1000.0
        for attempt in range(retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state["status"] = StepStatus.FAILED.value
                state["error"] = f"saga timed out after {int(self.config.timeout_ms)} ms"
                break
            state["status"] = StepStatus.RUNNING.value
            state["attempts"] = int(state.get("attempts") or 0) + 1
            state["started_at"] = state["started_at"] or _now()
            await self._save()  # before the action: a crash now leaves the step "running"
            timeout = remaining if step.timeout is None else min(step.timeout, remaining)
            try:
                result = await asyncio.wait_for(_call(step.action, self.context), timeout)
            except asyncio.TimeoutError:
                state["error"] = f"timed out after {timeout:g} s"
            except SagaError as exc:
                state["error"] = str(exc) or "SagaError"
                state["status"] = StepStatus.FAILED.value
                break
            except Exception as exc:  # noqa: BLE001 - a failing step is recorded, then retried
                state["error"] = f"{type(exc).__name__}: {exc}"
            else:
                if isinstance(result, dict):
                    self.context.update(result)
                elif result is not None:
                    self.context[step.name] = result
                state["status"] = StepStatus.COMPLETED.value
                state["error"] = None
                state["finished_at"] = _now()
                await self._save()
                self._log("step %s completed", step.name)
                return True
            self._log("step %s attempt %d failed: %s", step.name, attempt + 1, state["error"])
            state["status"] = StepStatus.FAILED.value
            if attempt < retries:
                await self._save()
                await asyncio.sleep(delay * (2**attempt))
        state["status"] = StepStatus.FAILED.value
        state["finished_at"] = _now()
        self.error = f"step {step.name!r} failed: {state['error']}"
        await self._save()
        return False

    async def _compensate(self, include_failed: str | None = None) -> None:
        self.status = SagaStatus.COMPENSATING.value
        await self._save()
        todo = {StepStatus.COMPLETED.value, StepStatus.COMPENSATING.value, StepStatus.COMPENSATION_FAILED.value}
        retries = int(self.config.max_retries)
        delay = float(self.config.retry_delay_ms) / 1000.0
        for step, state in reversed(list(zip(self.saga.steps, self.steps, strict=True))):
            if state["status"] not in todo and step.name != include_failed:
                continue
            if step.compensate is None:
                if state["status"] != StepStatus.FAILED.value:
                    state["status"] = StepStatus.COMPENSATED.value
                continue
            state["status"] = StepStatus.COMPENSATING.value
            await self._save()
            for attempt in range(retries + 1):
                try:
                    await _call(step.compensate, self.context)
                except Exception as exc:  # noqa: BLE001 - recorded on the step and in the result
                    state["compensation_error"] = f"{type(exc).__name__}: {exc}"
                    self._log("compensation of %s failed: %s", step.name, state["compensation_error"])
                    if attempt < retries:
                        await asyncio.sleep(delay * (2**attempt))
                        continue
                    state["status"] = StepStatus.COMPENSATION_FAILED.value
                else:
                    state["status"] = StepStatus.COMPENSATED.value
                    state["compensation_error"] = None
                break
            await self._save()
        failed = any(s["status"] == StepStatus.COMPENSATION_FAILED.value for s in self.steps)
        self.status = (SagaStatus.COMPENSATION_FAILED if failed else SagaStatus.COMPENSATED).value
        await self._save()
        self._log("%s", self.status)

    def __repr__(self) -> str:
        return f"<SagaExecution {self.saga_name} {self.execution_id} {self.status}>"


# ---- stores -------------------------------------------------------------------------------------


class MemorySagaStore:
    kind = "memory"

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def save(self, record: dict[str, Any]) -> None:
        self.records[record["id"]] = json.loads(json.dumps(record))

    async def claim(self, execution_id: str, owner: str, lease_until: float, now: float) -> bool:
        r = self.records.get(execution_id)
        if r is None or (r.get("owner") not in (None, owner) and float(r.get("lease_until") or 0) >= now):
            return False
        r["owner"], r["lease_until"] = owner, lease_until
        return True

    async def renew(self, execution_id: str, owner: str, lease_until: float) -> None:
        r = self.records.get(execution_id)
        if r is not None and r.get("owner") == owner:
            r["lease_until"] = lease_until

    async def get(self, execution_id: str) -> dict[str, Any] | None:
        r = self.records.get(execution_id)
        return None if r is None else json.loads(json.dumps(r))

    async def list(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        rows = [r for r in self.records.values() if status is None or r["status"] == status]
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        return [json.loads(json.dumps(r)) for r in rows[:limit]]


class SqlSagaStore:
    """Executions in ``<prefix>sagas`` of a ``cello.database.Database`` (SQLite, PostgreSQL)."""

    def __init__(self, db: Any, prefix: str = "cello_es_", owns: bool = False) -> None:
        if not prefix.replace("_", "").isalnum():
            raise ValueError(f"bad table_prefix {prefix!r}")
        self.db = db
        self.owns = owns
        self.kind = db.backend
        self.table = f"{prefix}sagas"

    async def open(self) -> None:
        from .database import IntegrityError

        stmt = (
            f"CREATE TABLE IF NOT EXISTS {self.table} (id VARCHAR(64) PRIMARY KEY, saga_name VARCHAR(200) NOT NULL, "
            "status VARCHAR(40) NOT NULL, context TEXT NOT NULL, steps TEXT NOT NULL, error TEXT, "
            "created_at VARCHAR(40) NOT NULL, updated_at VARCHAR(40) NOT NULL, owner VARCHAR(200), "
            "lease_until DOUBLE PRECISION NOT NULL DEFAULT 0)"
        )
        try:
            await self.db.execute(stmt)
        except IntegrityError:  # a concurrent CREATE (PostgreSQL)
            await self.db.execute(stmt)

    async def close(self) -> None:
        if self.owns:
            await self.db.close()

    async def ping(self) -> None:
        await self.db.fetch_val(f"SELECT COUNT(*) FROM {self.table} WHERE id = $1", "")

    async def save(self, r: dict[str, Any]) -> None:
        await self.db.execute(
            f"INSERT INTO {self.table} (id, saga_name, status, context, steps, error, created_at, updated_at, "
            "owner, lease_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO UPDATE SET "
            "status = excluded.status, context = excluded.context, steps = excluded.steps, error = excluded.error, "
            "updated_at = excluded.updated_at, owner = excluded.owner, lease_until = excluded.lease_until",
            r["id"],
            r["saga_name"],
            r["status"],
            json.dumps(r["context"]),
            json.dumps(r["steps"]),
            r.get("error"),
            r["created_at"],
            r["updated_at"],
            r.get("owner"),
            float(r.get("lease_until") or 0.0),
        )

    async def claim(self, execution_id: str, owner: str, lease_until: float, now: float) -> bool:
        """Take over an execution whose lease has run out (one process wins)."""
        n = await self.db.execute(
            f"UPDATE {self.table} SET owner = $1, lease_until = $2 WHERE id = $3 "
            "AND (owner IS NULL OR owner = $1 OR lease_until < $4)",
            owner,
            float(lease_until),
            execution_id,
            float(now),
        )
        return n == 1

    async def renew(self, execution_id: str, owner: str, lease_until: float) -> None:
        await self.db.execute(
            f"UPDATE {self.table} SET lease_until = $1 WHERE id = $2 AND owner = $3",
            float(lease_until),
            execution_id,
            owner,
        )

    @staticmethod
    def _decode(r: Any) -> dict[str, Any]:
        return {
            "id": r["id"],
            "saga_name": r["saga_name"],
            "status": r["status"],
            "context": json.loads(r["context"]),
            "steps": json.loads(r["steps"]),
            "error": r["error"],
            "created_at": r["created_at"],
            "updated_at": r["updated_at"],
            "owner": r["owner"],
            "lease_until": float(r["lease_until"] or 0.0),
        }

    _COLS = "id, saga_name, status, context, steps, error, created_at, updated_at, owner, lease_until"

    async def get(self, execution_id: str) -> dict[str, Any] | None:
        r = await self.db.fetch_one(f"SELECT {self._COLS} FROM {self.table} WHERE id = $1", execution_id)
        return None if r is None else self._decode(r)

    async def list(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        if status is None:
            rows = await self.db.fetch_all(
                f"SELECT {self._COLS} FROM {self.table} ORDER BY created_at DESC LIMIT {int(limit)}"
            )
        else:
            rows = await self.db.fetch_all(
                f"SELECT {self._COLS} FROM {self.table} WHERE status = $1 ORDER BY created_at DESC LIMIT {int(limit)}",
                status,
            )
        return [self._decode(r) for r in rows]


def _store_for(url: str | None, database: Any, table_prefix: str) -> Any:
    if database is not None:
        return SqlSagaStore(database, table_prefix)
    if url is None or url.startswith("memory"):
        return MemorySagaStore()
    from .database import Database

    return SqlSagaStore(Database(url, name="saga_store"), table_prefix, owns=True)


class SagaOrchestrator:
    """Registered sagas and their executions. Storage: ``database=`` (a
    ``cello.database.Database``), ``url=`` (``sqlite://...`` / ``postgresql://...``) or
    memory (the default)."""

    def __init__(
        self,
        config: SagaConfig | None = None,
        *,
        database: Any = None,
        url: str | None = None,
        store: Any = None,
        table_prefix: str = "cello_es_",
        lease_secs: float = 10.0,
    ) -> None:
        if config is not None and not isinstance(config, SagaConfig):
            raise TypeError(f"SagaOrchestrator needs a SagaConfig, not {type(config).__name__}")
        self.config = config if config is not None else SagaConfig()
        self.store = store if store is not None else _store_for(url, database, table_prefix)
        self.sagas: dict[str, Saga] = {}
        self.listeners: list[Callable[[SagaExecution], Any]] = []
        self._opened = False
        self._running: dict[str, asyncio.Task] = {}
        if lease_secs <= 0:
            raise ValueError("lease_secs must be positive")
        # An execution is run by one orchestrator at a time: its owner renews a lease while it
        # runs; another process resumes it only once the lease has run out (the owner died).
        self.lease_secs = float(lease_secs)
        self.owner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._active: set[str] = set()

    @classmethod
    async def connect(cls, config: SagaConfig | None = None, **kwargs: Any) -> SagaOrchestrator:
        orch = cls(config, **kwargs)
        await orch.open()
        return orch

    async def open(self) -> None:
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def close(self) -> None:
        await self.store.close()

    async def ping(self) -> bool:
        """Raises when the store cannot be reached (the readiness check)."""
        await self.open()
        await self.store.ping()
        return True

    def add_listener(self, listener: Callable[[SagaExecution], Any]) -> Callable[[SagaExecution], Any]:
        """Call ``listener(execution)`` (sync or async) after each persisted state change."""
        self.listeners.append(listener)
        return listener

    def _execution(
        self, saga: Saga, record: dict[str, Any] | None = None, execution_id: str | None = None, own: bool = False
    ) -> SagaExecution:
        if record is None:
            ex = SagaExecution(saga, execution_id, self.config, self.store)
        else:
            ex = SagaExecution.from_record(saga, record, self.config, self.store)
        ex.listeners = self.listeners
        if own:
            ex.owner = self.owner_id
            ex.lease_secs = self.lease_secs
        return ex

    async def _run_owned(self, ex: SagaExecution, context: dict[str, Any] | None = None) -> SagaResult:
        self._active.add(ex.execution_id)
        try:
            return await ex.run(context)
        finally:
            self._active.discard(ex.execution_id)

    async def _claim(self, execution_id: str) -> dict[str, Any] | None:
        """The record, if this orchestrator may run it now (not running here, lease free)."""
        if execution_id in self._active:
            return None
        now = time.time()
        if not await self.store.claim(execution_id, self.owner_id, now + self.lease_secs, now):
            return None
        return await self.store.get(execution_id)

    def register(self, saga: Saga) -> Saga:
        if not isinstance(saga, Saga):
            raise TypeError("register() takes a Saga")
        self.sagas[saga.name] = saga
        return saga

    def _saga(self, saga: Saga | str) -> Saga:
        if isinstance(saga, Saga):
            self.sagas.setdefault(saga.name, saga)
            return saga
        found = self.sagas.get(str(saga))
        if found is None:
            raise SagaError(f"no saga registered under {saga!r}")
        return found

    async def execute(
        self, saga: Saga | str, context: dict[str, Any] | None = None, execution_id: str | None = None
    ) -> SagaResult:
        """Run a new execution to its end (completed or compensated)."""
        await self.open()
        s = self._saga(saga)
        if execution_id is not None and await self.store.get(execution_id) is not None:
            raise SagaError(f"saga execution {execution_id!r} exists already")
        ex = self._execution(s, execution_id=execution_id, own=True)
        return await self._run_owned(ex, dict(context or {}))

    async def get_execution(self, execution_id: str) -> SagaExecution | None:
        await self.open()
        record = await self.store.get(str(execution_id))
        if record is None:
            return None
        saga = self.sagas.get(record["saga_name"]) or Saga(record["saga_name"], [])
        ex = self._execution(saga, record)
        if not saga.steps:
            ex.steps = record.get("steps") or []
        return ex

    async def list_executions(
        self, status: str | StepStatus | SagaStatus | None = None, limit: int = 100
    ) -> list[SagaExecution]:
        await self.open()
        records = await self.store.list(None if status is None else str(status), int(limit))
        out = []
        for record in records:
            saga = self.sagas.get(record["saga_name"]) or Saga(record["saga_name"], [])
            ex = SagaExecution.from_record(saga, record, self.config, self.store)
            if not saga.steps:
                ex.steps = record.get("steps") or []
            out.append(ex)
        return out

    async def resume_pending(self) -> list[SagaResult]:
        """Continue the executions left running or compensating by a process that died (their
        lease ran out): completed steps are skipped, an interrupted non-idempotent step leads
        to compensation. Among several processes, each execution is taken by one."""
        await self.open()
        results = []
        for status in (SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value):
            for listed in await self.store.list(status, 10_000):
                saga = self.sagas.get(listed["saga_name"])
                if saga is None:
                    log.warning("saga %s %s: not registered, cannot resume", listed["saga_name"], listed["id"])
                    continue
                if (
                    listed.get("owner") not in (None, self.owner_id)
                    and float(listed.get("lease_until") or 0) >= time.time()
                ):
                    continue  # alive elsewhere
                record = await self._claim(listed["id"])
                if record is None or record["status"] not in (SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value):
                    continue
                results.append(await self._run_owned(self._execution(saga, record, own=True)))
        return results

    async def retry(self, execution_id: str) -> SagaResult:
        """Run the failed compensations of a ``compensation_failed`` execution again, or
        continue a stuck ``running`` one."""
        ex = await self.get_execution(execution_id)
        if ex is None:
            raise SagaError(f"no saga execution {execution_id!r}")
        saga = self.sagas.get(ex.saga_name)
        if saga is None:
            raise SagaError(f"saga {ex.saga_name!r} is not registered")
        record = await self._claim(execution_id)
        if record is None:
            raise SagaError(f"saga execution {execution_id!r} is being run by another process")
        return await self._run_owned(self._execution(saga, record, own=True))


def enable_sagas(
    app: Any,
    config: SagaConfig | None = None,
    *,
    url: str | None = None,
    resume: bool = True,
    table_prefix: str = "cello_es_",
    lease_secs: float = 10.0,
) -> SagaOrchestrator:
    """``app.enable_sagas``: a ``SagaOrchestrator`` as ``app.sagas`` and the singleton
    ``saga_orchestrator``, stored in the app's database (``enable_database``) unless ``url``
    says otherwise; from startup on it resumes the executions a dead process left unfinished
    (``resume``; checked every ``lease_secs / 2``); a ``saga_store`` readiness check."""
    from . import observability

    database = app._singletons.get("database") if url is None else None
    orch = SagaOrchestrator(config, database=database, url=url, table_prefix=table_prefix, lease_secs=lease_secs)
    app.sagas = orch
    app.register_singleton("saga_orchestrator", orch)

    async def recover() -> None:
        while True:
            try:
                await orch.resume_pending()
            except Exception as exc:  # noqa: BLE001 - the store may be down; try again later
                log.warning("resuming sagas failed: %s", exc)
            await asyncio.sleep(max(0.2, orch.lease_secs / 2))

    async def start() -> None:
        from .database import DatabaseError

        try:
            await orch.open()
        except DatabaseError as exc:
            # Serve anyway: /health/ready answers 503 until the store is reachable.
            log.warning("saga store unreachable at startup: %s", exc)
        if resume:
            orch._running["resume"] = asyncio.ensure_future(recover())

    async def stop() -> None:
        task = orch._running.pop("resume", None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    app.on_event("startup")(start)
    app.on_event("shutdown")(stop)
    observability.register_builtin_check("saga_store", orch.ping)
    from ._es_dashboard import install

    install(app)
    return orch
