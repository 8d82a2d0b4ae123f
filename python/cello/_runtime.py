"""The Python thread of a worker: the asyncio loop that runs handlers.

Rust (``cello._cello.Runtime``) owns sockets, HTTP and routing. It queues matched
requests and wakes this loop through a file descriptor; ``Runtime.drain`` then
runs the handlers. This module supplies the callbacks Rust needs (``Hooks``) and
the loop driver (``Executor``).
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import signal
import threading
import traceback
from typing import TYPE_CHECKING, Any

from . import _cello, background, observability
from .errors import HTTPException, problem_body

if TYPE_CHECKING:
    from .app import App

error_log = logging.getLogger("cello.error")
access_log = logging.getLogger("cello.access")
log = logging.getLogger("cello")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (faster), else the stdlib loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


async def _pump(iterable: Any, sink: Any) -> None:
    """Feed a sync or async iterable into a streaming response body."""
    try:
        if hasattr(iterable, "__aiter__"):
            async for chunk in iterable:
                while not sink.send(chunk):
                    if not await sink.wait():
                        raise ConnectionResetError
        else:
            for chunk in iterable:
                while not sink.send(chunk):
                    if not await sink.wait():
                        raise ConnectionResetError
    except ConnectionResetError:
        sink.close()
        closer = getattr(iterable, "aclose", None)
        if closer is not None:
            await closer()
        elif hasattr(iterable, "close"):
            iterable.close()
    except BaseException:
        error_log.exception("streaming response failed")
        sink.abort()
        raise
    else:
        sink.close()


class Hooks:
    """Callbacks for the Rust runtime; all run on the loop's thread unless noted."""

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop, debug: bool, pool_size: int = 64) -> None:
        self.app = app
        self.loop = loop
        self.debug = debug
        self.stopped: asyncio.Future = loop.create_future()
        self.tasks: set[asyncio.Future] = set()
        self.pool_size = pool_size
        self._pool: Any = None

    def _track(self, task: asyncio.Future, responder: Any) -> asyncio.Future:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(responder)
        return task

    def spawn(self, awaitable: Any, responder: Any) -> asyncio.Future:
        return self._track(asyncio.ensure_future(awaitable, loop=self.loop), responder)

    def track(self, task: asyncio.Future, responder: Any) -> asyncio.Future:
        """An eager Task that suspended: answer when it finishes."""
        return self._track(task, responder)

    @property
    def pool(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.pool_size, thread_name_prefix="cello-pool")
        return self._pool

    def offload(self, endpoint: Any, request: Any, responder: Any) -> asyncio.Future:
        """Run a blocking sync handler in the bounded pool."""
        return self._track(self.loop.run_in_executor(self.pool, observability.pooled, endpoint, request), responder)

    def pool_stats(self) -> dict[str, int]:
        pool = self._pool
        busy = 0 if pool is None else len(getattr(pool, "_threads", ()))
        return {"size": self.pool_size, "threads": busy}

    def log_info(self, message: str) -> None:
        # A warning: a handler that blocks the loop is something its author should see.
        log.warning("%s", message)

    def access(self, records: list[tuple]) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        for method, target, version, status, size, ms, client, trace in records:
            access_log.info(
                '%s - "%s %s %s" %d %s %.2fms',
                client or "-",
                method,
                target,
                version,
                status,
                "-" if size is None else size,
                ms,
                extra={
                    "client": client,
                    "method": method,
                    "path": target,
                    "http_version": version,
                    "status": status,
                    "size": size,
                    "duration_ms": round(ms, 3),
                    "trace_id": trace[0] if trace else None,
                    "span_id": trace[1] if trace else None,
                },
            )

    def health(self, timeout: float) -> Any:
        """The readiness checks as a coroutine (scheduled on this loop from Rust)."""
        return observability.run_health_checks(self.app, timeout)

    def pump(self, iterable: Any, sink: Any) -> None:
        task = self.loop.create_task(_pump(iterable, sink))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def resolve(self, fut: asyncio.Future, value: Any) -> None:
        """Called from I/O threads."""
        self.loop.call_soon_threadsafe(_set_result, fut, value)

    def reject(self, fut: asyncio.Future, exc: BaseException) -> None:
        """Called from I/O threads."""
        self.loop.call_soon_threadsafe(_set_exception, fut, exc)

    def on_stopped(self, err: str | None) -> None:
        if err:
            error_log.error("server stopped with an error: %s", err)
        _set_result(self.stopped, err)

    def error(self, exc: BaseException, request: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        """Map an exception raised by a handler to (status, headers, body)."""
        handler = self.app._exception_handler_for(exc)
        if handler is not None:
            try:
                result = handler(request, exc)
                return self.app._plain_response(result)
            except Exception as inner:  # noqa: BLE001 - the handler itself failed: report that
                exc = inner
        if isinstance(exc, HTTPException):
            headers = [("content-type", "application/problem+json"), *exc.headers.items()]
            extra = getattr(exc, "extra", None) or {}
            return exc.status_code, headers, problem_body(exc.status_code, exc.detail, request.path, **extra)
        if type(exc).__module__ == "cello.database":
            from .database import problem_for

            mapped = problem_for(exc)
            if mapped is not None:
                status, detail, extra = mapped
                if status >= 500:
                    error_log.error("%s in %s %s: %s", type(exc).__name__, request.method, request.path, exc)
                headers = [("content-type", "application/problem+json")]
                if status == 503:
                    headers.append(("retry-after", "1"))
                return status, headers, problem_body(status, detail, request.path, **extra)
        if isinstance(exc, _cello.JsonDecodeError):
            return 400, [("content-type", "application/problem+json")], problem_body(400, str(exc), request.path)
        error_log.error(
            "unhandled exception in %s %s",
            request.method,
            request.path,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        detail = "internal server error"
        extra: dict[str, Any] = {}
        if self.debug:
            detail = f"{type(exc).__name__}: {exc}"
            extra["traceback"] = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return 500, [("content-type", "application/problem+json")], problem_body(500, detail, request.path, **extra)


class Executor:
    """Owns the loop and the Rust runtime of one worker (or of a TestClient)."""

    def __init__(self, app: App, config: dict[str, Any]) -> None:
        from .responses import Response

        self.app = app
        self.config = config
        self.loop = new_event_loop()
        pool_size = int((config.get("threadpool") or {}).get("size", 64))
        self.hooks = Hooks(app, self.loop, bool(config.get("debug")), pool_size)
        background.attach(app, self.loop, self.hooks)
        routes, endpoints = app._compile()
        endpoints = observability.wrap_endpoints(config, endpoints)
        self.core = _cello.Runtime(json.dumps(config), routes, endpoints, self.hooks, Response, self.loop)
        self.loop.add_reader(self.core.wake_fd(), self.core.drain)
        observability.attach(self.loop)
        self._closed = False

    def run_hooks(self, event: str) -> None:
        self.loop.run_until_complete(self.app._run_event(event))

    def serve(self, drain_timeout: float = 30.0, on_ready: Any = None) -> tuple[str, int]:
        """Bind, run startup hooks, serve until stopped, run shutdown hooks."""
        host, port = self.core.bind()
        self.address = (host, port)
        self.run_hooks("startup")
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self._on_signal)
        # The I/O side starts the drain on SIGTERM itself (readiness flips even while a
        # handler holds this thread); its handler chains to the ones installed above.
        self.core.start(drain_timeout, on_main)
        if on_ready is not None:
            on_ready((host, port))
        try:
            self.loop.run_until_complete(self.hooks.stopped)
            self.run_hooks("shutdown")
        finally:
            self.close()
        return host, port

    def _on_signal(self) -> None:
        if getattr(self, "_stopping", False):
            # A second signal: quit now.
            raise SystemExit(1)
        self._stopping = True
        self.core.stop()

    def stop(self) -> None:
        """Thread-safe: begin a graceful stop."""
        self.core.stop()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.loop.remove_reader(self.core.wake_fd())
            pending = [t for t in self.hooks.tasks if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            if self.hooks._pool is not None:
                self.hooks._pool.shutdown(wait=False, cancel_futures=True)
        finally:
            self.loop.close()


def status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"
