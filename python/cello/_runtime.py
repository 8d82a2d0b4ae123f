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
from .problems import ProblemDetails

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


class _ClientGone(Exception):
    """The client of a streamed response went away (not an error of the stream)."""


def _cancel_when_gone(sink: Any) -> Any:
    """Cancel the running pump task as soon as the client leaves, even while the producer
    waits for its next item (an SSE generator blocked on a queue learns at once, not at its
    next event). Returns the watcher future (cancelled by the caller when the body ends)."""
    task = asyncio.current_task()
    watcher = sink.gone()

    def fire(fut: asyncio.Future) -> None:
        if not fut.cancelled() and task is not None and not task.done():
            task.cancel()

    watcher.add_done_callback(fire)
    return watcher


async def _pump(iterable: Any, sink: Any) -> None:
    """Feed a sync or async iterable into a streaming response body.

    Only ``close()`` ends the body normally; anything raised by the iterable (a
    ``ConnectionResetError`` of its own included) aborts it, so the client sees a
    truncated response, never a clean end of a failed stream.
    """
    watcher = _cancel_when_gone(sink) if hasattr(iterable, "__aiter__") else None
    try:
        await _pump_items(iterable, sink)
    except asyncio.CancelledError:
        # The client left (or the server stops): the async generator was closed where it
        # waited (its ``finally`` ran); the body never ends cleanly.
        sink.abort()
        closer = getattr(iterable, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except RuntimeError:
                pass  # already closing
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()


async def _pump_items(iterable: Any, sink: Any) -> None:
    try:
        if hasattr(iterable, "__aiter__"):
            async for chunk in iterable:
                while not _send(sink, chunk):
                    if not await sink.wait():
                        raise _ClientGone
        else:
            for chunk in iterable:
                while not _send(sink, chunk):
                    if not await sink.wait():
                        raise _ClientGone
    except _ClientGone:
        sink.abort()  # nobody reads it any more
        closer = getattr(iterable, "aclose", None)
        if closer is not None:
            await closer()
        elif hasattr(iterable, "close"):
            iterable.close()
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        sink.abort()
        if isinstance(exc, Exception):
            error_log.exception("streaming response failed; the response is cut off (no clean end)")
            return
        raise
    else:
        sink.close()


def _send(sink: Any, chunk: Any) -> bool:
    try:
        return sink.send(chunk)
    except ConnectionResetError:
        raise _ClientGone from None


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
        self.access_format = "common"  # enable_logging(format=...)

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

    def access_enabled(self) -> bool:
        """Whether ``access`` would log anything (asked before the records are converted)."""
        return access_log.isEnabledFor(logging.INFO)

    def access(self, records: list[tuple]) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        fmt = self.access_format
        for method, target, version, status, size, ms, client, trace, request_id in records:
            fields = {
                "client": client,
                "method": method,
                "path": target,
                "http_version": version,
                "status": status,
                "size": size,
                "duration_ms": round(ms, 3),
                "trace_id": trace[0] if trace else None,
                "span_id": trace[1] if trace else None,
                "request_id": request_id,
            }
            if fmt == "common":
                access_log.info(
                    '%s - "%s %s %s" %d %s %.2fms%s',
                    client or "-",
                    method,
                    target,
                    version,
                    status,
                    "-" if size is None else size,
                    ms,
                    f" {request_id}" if request_id else "",
                    extra=fields,
                )
            elif fmt == "json":
                access_log.info("%s", json.dumps(fields, separators=(",", ":")), extra=fields)
            else:
                text = {k: "-" if v is None else v for k, v in fields.items()}
                text["version"] = version
                access_log.info("%s", fmt.format(**text), extra=fields)

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
        if isinstance(exc, ProblemDetails):
            headers = [("content-type", "application/problem+json"), *exc.headers.items()]
            return exc.status, headers, exc.to_json().encode()
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


def inline_mode(workers: int | None) -> bool:
    """Whether sync handlers may run on the I/O thread (``CELLO_INLINE``: ``auto``, ``on``,
    ``off``). ``auto`` (the default): when the worker has no spare CPU for a second thread
    (``workers`` at least the CPUs the process may use), where the hand-off to the loop thread
    only adds context switches. A TestClient (``workers`` None) keeps the hand-off. (Access
    records wait for a timed flush, so the access log no longer wakes the loop per batch.)"""
    from . import _cli, _env

    mode = (_env.lookup("CELLO_INLINE") or "auto").strip().lower()
    if mode in ("on", "1", "true", "yes"):
        return True
    if mode in ("off", "0", "false", "no"):
        return False
    if mode != "auto":
        raise ValueError(f"CELLO_INLINE must be auto, on or off, not {mode!r}")
    return workers is not None and workers >= _cli.auto_workers()


class Executor:
    """Owns the loop and the Rust runtime of one worker (or of a TestClient)."""

    def __init__(self, app: App, config: dict[str, Any], workers: int | None = None) -> None:
        from . import di, edge
        from .app import _PARAM
        from .responses import Response

        self.app = app
        self.config = config
        self.loop = new_event_loop()
        pool_size = int((config.get("threadpool") or {}).get("size", 64))
        self.hooks = Hooks(app, self.loop, bool(config.get("debug")), pool_size)
        log_options = config.get("accessLogOptions") or config.get("access_log_options") or {}
        self.hooks.access_format = str(log_options.get("format") or "common")
        background.attach(app, self.loop, self.hooks)
        routes, endpoints = app._compile()
        endpoints = observability.wrap_endpoints(config, endpoints)
        endpoints = app._wrap_endpoints(endpoints, [r.handler for r in app._flatten()])
        limits = [r.max_body_size for r in app._flatten()]
        websockets = [i for i, r in enumerate(app._flatten()) if r.websocket]
        # Routes whose endpoint may run on the I/O thread once it has proven fast (Rust decides).
        inline = None
        if inline_mode(workers):
            inline = [
                i
                for i, (r, (_, _, blocking)) in enumerate(zip(app._flatten(), routes, strict=True))
                if not r.websocket
                and not blocking
                and not edge._is_async(endpoints[i])
                and di.runs_off_loop(app, r, _PARAM.findall(r.path))
            ]
        self.core = _cello.Runtime(
            json.dumps(config),
            routes,
            endpoints,
            self.hooks,
            Response,
            self.loop,
            websocket_routes=websockets,
            body_limits=limits,
            inline_routes=inline,
        )
        self.loop.add_reader(self.core.wake_fd(), self.core.drain)
        observability.attach(self.loop)
        self._closed = False
        app._track_executor(self)
        # The heartbeat: a timer that only fires when the loop turns. Rust answers
        # /health/live 503 and the supervisor replaces the worker when it stops.
        self.worker_timeout = float(self.core.worker_timeout)
        self.beat_interval = min(1.0, max(0.05, self.worker_timeout / 4))
        self.on_beat: Any = None
        self._beat()

    def _beat(self) -> None:
        self.core.heartbeat()
        if self.on_beat is not None:
            self.on_beat()
        self.loop.call_later(self.beat_interval, self._beat)

    def run_hooks(self, event: str) -> None:
        self.loop.run_until_complete(self.app._run_event(event))

    def serve(
        self, drain_timeout: float = 30.0, on_ready: Any = None, on_beat: Any = None, listen_fd: int | None = None
    ) -> tuple[str, int]:
        """Bind (or take over ``listen_fd``, a listening socket), run startup hooks, serve until
        stopped, run shutdown hooks. ``on_beat`` is called on every heartbeat of the loop (the
        supervisor's liveness pipe)."""
        self.on_beat = on_beat
        self.drain_timeout = drain_timeout
        host, port = self.core.bind(listen_fd)
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
        self._stopping_now()

    def stop(self) -> None:
        """Thread-safe: begin a graceful stop."""
        self.core.stop()
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stopping_now)

    def _stopping_now(self) -> None:
        """Tell what runs beside HTTP (``enable_messaging``'s consumers: stop fetching) that the
        drain began; their own drain follows in the shutdown hooks."""
        for fn in list(getattr(self.app, "_on_stop", ())):
            try:
                fn()
            except Exception:  # noqa: BLE001 - one listener must not keep the others from stopping
                error_log.exception("a stop listener failed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.core.finished()
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
