"""``BackgroundTasks`` and the work that runs after a response has been sent.

Per request, the handler's background tasks and the teardown of its generator dependencies
form one job. The job must start only once the response is on its way, and the response is
sent by whatever completes the handler: ``Runtime.drain`` for an inline sync call, the
task's done callback (the runtime's responder) for a coroutine, the pool future's callback
for an offloaded call. So the job is started by a callback queued *behind* that one: the
loop's callbacks run in FIFO order. Jobs are tracked per app, so a TestClient can wait for
them and a graceful shutdown drains them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("cello.error")


class BackgroundTasks:
    """Tasks to run after the response is sent, in the order they were added: sync ones in
    the thread pool, async ones on the loop. A failing task is logged with its traceback and
    counted (``cello_http_background_task_failures_total``); the next one still runs."""

    def __init__(self, tasks: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] | None = None) -> None:
        self.tasks = list(tasks or [])

    def add_task(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not callable(func):
            raise TypeError(f"add_task needs a callable, got {func!r}")
        self.tasks.append((func, args, kwargs))

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        return f"BackgroundTasks({[getattr(f, '__name__', f) for f, _, _ in self.tasks]})"


class _Runner:
    """Per-app bookkeeping of after-response jobs."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.hooks: Any = None
        self.pending = 0  # queued, not started yet (touched on the loop thread only)
        self.tasks: set[asyncio.Task] = set()
        self.failures = 0


def runner(app: App) -> _Runner:
    r = app.__dict__.get("_cello_after")
    if r is None:
        r = app.__dict__["_cello_after"] = _Runner()
    return r


def attach(app: App, loop: asyncio.AbstractEventLoop, hooks: Any) -> None:
    """Called by the executor: the loop jobs run on and the pool sync tasks run in."""
    r = runner(app)
    r.loop = loop
    r.hooks = hooks


def _is_async(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))  # noqa: B004


async def _run(r: _Runner, exits: list[Any], tasks: BackgroundTasks | None, exc: BaseException | None) -> None:
    from .di import teardown

    try:
        # Tasks first, so they can still use what the dependencies provide (a DB session).
        if tasks is not None and exc is None:
            loop = asyncio.get_running_loop()
            for func, args, kwargs in tasks.tasks:
                try:
                    if _is_async(func):
                        await func(*args, **kwargs)
                    else:
                        pool = r.hooks.pool if r.hooks is not None else None
                        result = await loop.run_in_executor(pool, functools.partial(func, *args, **kwargs))
                        if inspect.isawaitable(result):
                            await result
                except Exception as e:  # noqa: BLE001 - logged and counted; the next task still runs
                    _failed(r, func, e)
    finally:
        if exits:
            await teardown(exits, exc)


def _failed(r: _Runner, func: Any, e: BaseException) -> None:
    r.failures += 1
    try:
        from ._cello import background_task_failed
    except ImportError:  # an extension built before the counter existed
        pass
    else:
        background_task_failed()
    log.error("background task %s failed", getattr(func, "__name__", func), exc_info=(type(e), e, e.__traceback__))


def _start(r: _Runner, loop: asyncio.AbstractEventLoop, exits: list[Any], tasks: Any, exc: Any) -> None:
    r.pending -= 1
    task = loop.create_task(_run(r, exits, tasks, exc))
    r.tasks.add(task)
    task.add_done_callback(r.tasks.discard)


def _hop(r: _Runner, loop: asyncio.AbstractEventLoop, n: int, *job: Any) -> None:
    if n == 0:
        _start(r, loop, *job)
    else:
        loop.call_soon(_hop, r, loop, n - 1, *job)


def _from_pool(r: _Runner, loop: asyncio.AbstractEventLoop, *job: Any) -> None:
    r.pending += 1
    # Queued before the pool future's completion callback; two more hops put the job behind
    # the responder that callback schedules.
    loop.call_soon(_hop, r, loop, 1, *job)


def after_response(app: App, exits: list[Any], tasks: BackgroundTasks | None, exc: BaseException | None) -> None:
    """Run ``tasks`` (unless the handler raised) and then the dependency teardowns, once the
    response has been handed to the I/O thread."""
    r = runner(app)
    job = (exits, tasks, exc)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # a pool thread
        loop = r.loop
        if loop is None or loop.is_closed():
            raise RuntimeError("after-response work needs the app's running executor") from None
        loop.call_soon_threadsafe(_from_pool, r, loop, *job)
        return
    r.pending += 1
    task = asyncio.current_task(loop)
    if task is not None and not task.done():
        task.add_done_callback(lambda _t: loop.call_soon(_start, r, loop, *job))
    else:
        loop.call_soon(_start, r, loop, *job)


async def drain(app: App, timeout: float | None = 30.0) -> None:
    """Wait for queued and running after-response jobs (graceful shutdown, TestClient)."""
    r = app.__dict__.get("_cello_after")
    if r is None:
        return
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while r.pending or r.tasks:
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            log.warning("%d background job(s) still running at shutdown", len(r.tasks) + r.pending)
            return
        if r.tasks:
            await asyncio.wait(set(r.tasks), timeout=left)
        else:
            await asyncio.sleep(0)


__all__ = ["BackgroundTasks"]
