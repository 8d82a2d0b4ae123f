"""``DataLoader``: coalesce the ``load(key)`` calls of one event-loop tick into one batch call,
and cache results per GraphQL request.

A loader is usually defined once at module level; while a GraphQL operation executes, its queue
and cache live in that operation's state (a context variable set by ``GraphQL.execute``), so
two requests never share cached values. Outside an operation the loader keeps its own.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

# The loader states of the GraphQL operation being executed: {id(loader): _State}.
current_states: contextvars.ContextVar[dict[int, _State] | None] = contextvars.ContextVar(
    "cello_graphql_loaders", default=None
)


class _State:
    __slots__ = ("cache", "queue")

    def __init__(self) -> None:
        self.cache: dict[Hashable, asyncio.Future[Any]] = {}
        self.queue: list[tuple[Hashable, asyncio.Future[Any]]] = []


class DataLoader:
    """``DataLoader(batch_load_fn, *, max_batch_size=None, cache=True)``.

    ``batch_load_fn(keys)`` (sync or async) returns one value per key, in the keys' order; a
    value that is an ``Exception`` fails that key's ``load`` only.
    """

    def __init__(
        self,
        batch_load_fn: Callable[[list[Any]], Awaitable[Iterable[Any]] | Iterable[Any]],
        *,
        max_batch_size: int | None = None,
        cache: bool = True,
    ) -> None:
        if not callable(batch_load_fn):
            raise TypeError("DataLoader needs a batch_load_fn(keys) callable")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.batch_load_fn = batch_load_fn
        self.max_batch_size = max_batch_size
        self.cache = cache
        self._own = _State()

    def _state(self) -> _State:
        states = current_states.get()
        if states is None:
            return self._own
        state = states.get(id(self))
        if state is None:
            state = states[id(self)] = _State()
        return state

    def load(self, key: Hashable) -> asyncio.Future[Any]:
        """The value for ``key`` (awaitable); loads in the same tick share one batch call."""
        state = self._state()
        if self.cache and key in state.cache:
            return state.cache[key]
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self.cache:
            state.cache[key] = fut
        state.queue.append((key, fut))
        if len(state.queue) == 1:
            # Dispatch after the sibling resolvers already scheduled this tick ran their load().
            loop.call_soon(lambda: loop.create_task(self._dispatch(state)))
        return fut

    async def load_many(self, keys: Iterable[Hashable]) -> list[Any]:
        return list(await asyncio.gather(*(self.load(k) for k in keys)))

    def prime(self, key: Hashable, value: Any) -> DataLoader:
        """Put ``value`` in the cache for ``key`` (unless already there)."""
        state = self._state()
        if key not in state.cache:
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(value)
            state.cache[key] = fut
        return self

    def clear(self, key: Hashable) -> DataLoader:
        self._state().cache.pop(key, None)
        return self

    def clear_all(self) -> DataLoader:
        self._state().cache.clear()
        return self

    async def _dispatch(self, state: _State) -> None:
        queue, state.queue = state.queue, []
        size = self.max_batch_size or len(queue) or 1
        for i in range(0, len(queue), size):
            await self._run_batch(state, queue[i : i + size])

    async def _run_batch(self, state: _State, batch: list[tuple[Hashable, asyncio.Future[Any]]]) -> None:
        keys = [k for k, _ in batch]
        try:
            values = self.batch_load_fn(keys)
            if asyncio.iscoroutine(values) or isinstance(values, asyncio.Future):
                values = await values
            values = list(values)
            if len(values) != len(keys):
                raise ValueError(
                    f"DataLoader batch_load_fn returned {len(values)} values for {len(keys)} keys"
                    " (it must return one value per key, in order)"
                )
        except Exception as exc:  # noqa: BLE001 - every waiting load gets the error
            for key, fut in batch:
                state.cache.pop(key, None)
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (key, fut), value in zip(batch, values, strict=True):
            if fut.done():
                continue
            if isinstance(value, Exception):
                state.cache.pop(key, None)
                fut.set_exception(value)
            else:
                fut.set_result(value)
