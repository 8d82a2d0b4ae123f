"""Process management: one in-process server, N forked workers, or a reloading dev server.

Workers are forked from a supervisor that has imported the app but created no tokio runtime
and no thread (a runtime that exists before ``fork`` hangs the child). The supervisor never
serves: it reserves the port, forks, restarts crashed workers with backoff, drains on
SIGTERM/SIGINT and replaces workers one by one on SIGHUP. It also owns the listening sockets,
one per worker slot (SO_REUSEPORT, so the kernel spreads connections over the slots): a worker
accepts on its slot's socket, and its replacement takes over the same socket and so the same
accept queue. A connection the kernel has accepted for a worker that is being replaced is
served by the next one instead of being reset with a closing socket. Workers report readiness
through a pipe.

The reloader runs the server as a fresh child *process* (not a fork) so edited code is loaded,
and restarts it when a watched ``.py`` or ``.proto`` file changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

from . import _cli, _env

log = logging.getLogger("cello.supervisor")
banner_log = logging.getLogger("cello")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_STARTUP = 0, 1, 2, 3
BACKOFF_START, BACKOFF_MAX = 0.1, 5.0
BACKOFF_RESET_AFTER = 30.0  # a worker that ran this long was healthy: its slot's backoff restarts
# A crashed worker's slot keeps its listening socket (connections queued on it wait for the
# replacement) when the replacement is due within this long; in a crash loop the socket is
# closed, so new connections go to the slots that serve.
KEEP_QUEUE_MAX = 1.0
LISTEN_BACKLOG = 2048  # as the Rust listener of a single-process server
# Restart budget: up to max_restarts crashes within this window restart on the slot's own
# backoff; beyond it every restart waits BACKOFF_MAX. Restarts never stop (an OOM killer's
# burst must not become an outage).
CRASH_WINDOW = 60.0
HOOK_GRACE = 2.0  # on top of shutdown_timeout: time for shutdown hooks after the drain
RELOAD_POLL = 0.3
RELOAD_GRACE = 3.0  # the reloader's stop of an old server process, at most
# This worker's slot (0 outside a supervisor): consumers name themselves by host and slot, so a
# replacement worker takes over what the one it replaces left unacknowledged.
WORKER_SLOT = 0
SKIP_DIRS = {".venv", "venv", ".git", "node_modules", "target", "__pycache__", "site-packages", ".tox"}


class StartupError(Exception):
    """The app failed to start (exit code 3); the message is the one-line reason."""


# ---- entry points -------------------------------------------------------------------------------


def run_app(app: Any, opts: _cli.RunOptions, reload_argv: list[str] | None = None) -> int:
    """Serve ``app`` as ``opts`` say and return the process exit code.

    ``reload_argv`` is the command the reloader starts for each fresh server process; it
    defaults to re-running this interpreter as it was started.
    """
    _cli.configure_logging(opts.logs, opts.log_level)
    if opts.log_format == "json" or _env.lookup("CELLO_LOG_FORMAT"):
        from .observability import setup_logging

        setup_logging(opts.log_format)
    if (opts.reload or opts.workers > 1) and threading.current_thread() is not threading.main_thread():
        # Supervising needs signal handlers, which Python only allows on the main thread.
        raise RuntimeError("workers > 1 and reload need app.run() to be called from the main thread")
    if opts.port and not os.environ.get(_cli.RELOADER_PORT_ENV):
        # Once, in the process that owns the port (the reloader's server process is the one
        # exception: its parent holds the port already).
        try:
            check_port_free(opts.host, opts.port)
        except StartupError as exc:
            print(f"cello: the app failed to start: {exc}", file=sys.stderr, flush=True)
            return EXIT_STARTUP
    if opts.reload:
        return Reloader(opts, reload_argv or [sys.executable, *sys.orig_argv[1:]]).run()
    apply_options(app, opts)
    if opts.workers > 1:
        return Supervisor(app, opts).run()
    return serve_single(app, opts)


def supervise(app: Any, opts: _cli.RunOptions) -> int:
    """``App.run()`` with workers > 1 or reload."""
    return run_app(app, opts)


def apply_options(app: Any, opts: _cli.RunOptions) -> None:
    """Options that are app settings rather than server options."""
    if opts.health_checks and getattr(app, "_health", None) is None:
        app.enable_health_checks()
    if opts.forwarded_allow_ips is not None:
        proxies = opts.forwarded_allow_ips
        if "*" in proxies:  # uvicorn's "trust everyone"
            proxies = ["0.0.0.0/0", "::/0"]
        app.set_trusted_proxies(proxies)


def serve_single(app: Any, opts: _cli.RunOptions) -> int:
    """One server in this process (``workers=1``): exit 3 when it cannot start, 0 after a stop."""
    started = False

    def on_ready(address: tuple[str, int]) -> None:
        nonlocal started
        started = True
        if not _env.lookup(_cli.RELOADER_PORT_ENV):  # the reloader printed the banner already
            _banner(opts, address, workers=1)

    try:
        if opts.cpu_affinity:
            pin_to_cpu(0)
        app._serve(opts, on_ready=on_ready)
    except Exception as exc:
        if started:
            raise
        _fail_line(opts, exc)
        return EXIT_STARTUP
    return EXIT_OK


# ---- helpers ----------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail_line(opts: _cli.RunOptions, exc: BaseException) -> None:
    """The one-line reason on stderr; the traceback too in debug mode."""
    if opts.debug:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"cello: the app failed to start: {_one_line(exc)}", file=sys.stderr, flush=True)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _banner(opts: _cli.RunOptions, address: tuple[str, int], workers: int, extra: str = "") -> None:
    app = opts.app_spec or os.path.basename(sys.argv[0] or "app")
    banner_log.info(
        "Cello serving %s at %s (workers %d, env %s%s, pid %d)",
        app,
        _url(*address),
        workers,
        opts.env,
        extra,
        os.getpid(),
    )


def _bind_error(host: str, port: int, exc: OSError) -> StartupError:
    reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return StartupError(f"cannot bind {host}:{port}: {reason}")


def check_port_free(host: str, port: int) -> None:
    """Raise StartupError when something already holds host:port.

    Workers bind with SO_REUSEPORT, which the kernel grants next to any other SO_REUSEPORT
    socket of the same user: a second Cello would start silently and share the traffic. A probe
    bound *without* SO_REUSEPORT conflicts with every socket on the port, so it tells. It is
    closed at once; rolling restarts never probe (the supervisor holds the port by then).
    """
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        probe = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupError(f"cannot bind {host}:{port}: {exc}") from None
    with probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # as the Rust listener does
            probe.bind(addr)
        except OSError as exc:
            raise _bind_error(host, port, exc) from None


def reserve_port(host: str, port: int, backlog: int | None = None) -> socket.socket:
    """Bind a SO_REUSEPORT socket on host:port and keep it open; with ``backlog``, listen.

    Without a backlog it only reserves the port: the slots' listening sockets bind the same
    address with SO_REUSEPORT (so they all get the concrete port when ``port`` is 0), and
    nothing else can take the port while the supervisor runs. A bound socket that does not
    listen receives no connections. Raises StartupError when the port is taken.
    """
    if host == "localhost":
        host = "127.0.0.1"  # as the Rust listener resolves it
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupError(f"cannot bind {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # as the Rust listener does
        sock.bind(addr)
        if backlog is not None:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, exc) from None
    sock.set_inheritable(False)  # forked workers get it; programs they exec do not
    return sock


def pin_to_cpu(slot: int, cpus: list[int] | None = None) -> int:
    """Pin the calling thread, and the threads it starts later, to CPU number ``slot`` (modulo)
    of ``cpus`` (default: the CPUs it may use). Call it before the runtime starts its threads."""
    cpus = cpus or sorted(os.sched_getaffinity(0))
    cpu = cpus[slot % len(cpus)]
    os.sched_setaffinity(0, {cpu})
    return cpu


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {_signal_name(os.WTERMSIG(status))}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _set_parent_death_signal(sig: int) -> None:
    """Linux: the kernel sends ``sig`` to this process when its parent dies (no orphan workers)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG


class _Signals:
    """Queue signals and wake a selector through a pipe (handlers only record the number)."""

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.pending: deque[int] = deque()
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector = selector
        selector.register(self.rfd, selectors.EVENT_READ, "signal")
        self.previous = {sig: signal.signal(sig, self._handle) for sig in self.HANDLED}
        self.previous_wakeup = signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)

    def _handle(self, signum: int, frame: Any) -> None:
        self.pending.append(signum)

    def drain_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.rfd, 512):
                pass

    def pop(self) -> list[int]:
        out = []
        while self.pending:
            out.append(self.pending.popleft())
        return out

    def restore(self) -> None:
        signal.set_wakeup_fd(self.previous_wakeup)
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.selector.unregister(self.rfd)
        os.close(self.rfd)
        os.close(self.wfd)

    @staticmethod
    def reset_in_child() -> None:
        """A forked worker starts with default dispositions; the Executor installs its own."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        # SIGHUP is the supervisor's "rolling restart"; a terminal hang-up must not kill workers.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


# ---- workers ------------------------------------------------------------------------------------


class Worker:
    def __init__(self, pid: int, slot: int, fd: int) -> None:
        self.pid = pid
        self.slot = slot
        self.fd = fd  # read end of its readiness pipe; -1 once closed
        self.buf = b""
        self.started = time.monotonic()
        self.ready = False
        self.retiring = False  # we asked it to stop: its exit is not a crash
        self.last_beat = time.monotonic()  # the last heartbeat of its event loop
        self.timeout: float | None = None  # its worker_timeout, as it reported it
        self.hung = False  # killed for a stopped heartbeat
        self.error: str | None = None  # the reason it gave for failing to start


class Supervisor:
    """Forks and watches ``opts.workers`` workers; ``run()`` returns the exit code."""

    def __init__(self, app: Any, opts: _cli.RunOptions) -> None:
        self.app = app
        self.opts = opts
        self.workers: dict[int, Worker] = {}
        self.selector = selectors.DefaultSelector()
        self.backoff = [BACKOFF_START] * opts.workers
        self.restart_at: dict[int, float] = {}  # slot -> when to fork its replacement
        self.crashes: deque[float] = deque()
        self.booted = False
        self.stopping_since: float | None = None
        self.exit_code = EXIT_OK
        self.rollout: deque[int] = deque()  # pids of old workers still to replace (SIGHUP)
        self.rollout_new: int | None = None  # the replacement we are waiting for
        self.sock: socket.socket | None = None
        # slot -> its listening socket, shared by the slot's worker and its replacement
        self.listeners: dict[int, socket.socket] = {}
        self.restarts = 0
        # The supervisor's own mask: a replacement worker is pinned like the one it replaces.
        self.allowed_cpus = sorted(os.sched_getaffinity(0))
        self._stats: tuple[int, int] | None = None

    # -- main loop --

    def run(self) -> int:
        try:
            self.sock = reserve_port(self.opts.host, self.opts.port)
            self.opts.port = self.sock.getsockname()[1]
            for slot in range(self.opts.workers):
                self.listener(slot)
        except StartupError as exc:
            self.close_listeners()
            if self.sock is not None:
                self.sock.close()
            print(f"cello: the app failed to start: {exc}", file=sys.stderr, flush=True)
            return EXIT_STARTUP
        self.signals = _Signals(self.selector)
        # Workers snapshot their metrics here, so any one scrape returns the totals.
        from . import observability

        own_dir = not _env.lookup("CELLO_METRICS_DIR")
        self.metrics_dir = observability.prepare_metrics_dir()
        try:
            for slot in range(self.opts.workers):
                self.spawn(slot)
            while self.workers or (self.stopping_since is None and self.restart_at):
                self.step()
                self.publish_stats()
        finally:
            self.signals.restore()
            self.selector.close()
            self.close_listeners()
            self.sock.close()
            if own_dir:
                observability.cleanup_metrics_dir(self.metrics_dir)
        return self.exit_code

    def publish_stats(self) -> None:
        """``cello_workers`` and ``cello_worker_restarts_total`` for the workers' /metrics."""
        stats = (len(self.workers), self.restarts)
        if stats != self._stats:
            from . import observability

            observability.write_supervisor_stats(workers=stats[0], restarts=stats[1], directory=self.metrics_dir)
            self._stats = stats

    def step(self) -> None:
        now = time.monotonic()
        timeout = 1.0
        if self.restart_at and self.stopping_since is None:
            timeout = min(timeout, max(0.0, min(self.restart_at.values()) - now))
        if self.stopping_since is not None:
            timeout = min(timeout, max(0.0, self.stop_deadline - now))
        beats = [w.timeout for w in self.workers.values() if w.timeout]
        if beats:
            timeout = min(timeout, max(0.05, min(beats) / 4))
        for key, _ in self.selector.select(timeout):
            if key.data == "signal":
                self.signals.drain_pipe()
            else:
                self.read_pipe(key.data)
        for sig in self.signals.pop():
            self.on_signal(sig)
        self.reap()
        now = time.monotonic()
        self.check_heartbeats(now)
        if self.stopping_since is not None:
            if now >= self.stop_deadline and self.workers:
                for w in self.workers.values():
                    log.warning(
                        "worker %d still running %.0f s after SIGTERM: SIGKILL", w.pid, now - self.stopping_since
                    )
                self.kill_all()
            return
        for slot, due in list(self.restart_at.items()):
            if now >= due:
                del self.restart_at[slot]
                self.restarts += 1
                self.spawn(slot)

    # -- listening sockets --

    def listener(self, slot: int) -> socket.socket:
        """The slot's listening socket (made when the slot has none)."""
        sock = self.listeners.get(slot)
        if sock is None:
            sock = self.listeners[slot] = reserve_port(self.opts.host, self.opts.port, backlog=LISTEN_BACKLOG)
        return sock

    def close_listener(self, slot: int) -> None:
        """Close the supervisor's copy of the slot's socket: connections still queued on it are
        reset once no worker holds it either, and new ones go to the other slots."""
        sock = self.listeners.pop(slot, None)
        if sock is not None:
            sock.close()

    def close_listeners(self) -> None:
        for slot in list(self.listeners):
            self.close_listener(slot)

    # -- forking --

    def spawn(self, slot: int) -> Worker | None:
        try:
            self.listener(slot)
        except StartupError as exc:  # the port is ours (reserved), so hardly ever
            log.error("worker slot %d: %s; retrying in %.0f s", slot, exc, BACKOFF_MAX)
            self.restart_at[slot] = time.monotonic() + BACKOFF_MAX
            return None
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(rfd)
            self._worker_main(wfd, parent, slot)
        os.close(wfd)
        os.set_blocking(rfd, False)
        worker = Worker(pid, slot, rfd)
        self.workers[pid] = worker
        self.selector.register(rfd, selectors.EVENT_READ, worker)
        log.debug("forked worker %d (slot %d)", pid, slot)
        return worker

    def _worker_main(self, ready_fd: int, parent: int, slot: int) -> None:
        global WORKER_SLOT
        code = EXIT_FAILURE
        try:
            # Own process group: a terminal's Ctrl-C reaches only the supervisor, which then
            # sends exactly one SIGTERM (a second signal would make the worker quit at once).
            with contextlib.suppress(OSError):
                os.setpgid(0, 0)
            _set_parent_death_signal(signal.SIGTERM)
            if os.getppid() != parent:  # the supervisor died before prctl took effect
                os._exit(EXIT_FAILURE)
            _Signals.reset_in_child()
            WORKER_SLOT = slot
            # Other slots' sockets too: a socket no worker accepts on must not be kept open by
            # one that does not serve it.
            others = [s.fileno() for k, s in self.listeners.items() if k != slot]
            for fd in [self.signals.rfd, self.signals.wfd, self.sock.fileno(), self.selector.fileno(), *others]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            for other in self.workers.values():
                if other.fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(other.fd)
            if self.opts.cpu_affinity:
                self._pin(slot)
            # The server takes the descriptor over and closes it when it stops accepting: after
            # that no copy in this process keeps the socket open.
            listen_fd = self.listeners[slot].detach()
            code = self._serve_worker(ready_fd, listen_fd)
        except BaseException:  # nothing may escape a forked child
            with contextlib.suppress(BaseException):
                log.exception("worker %d failed", os.getpid())
        finally:
            with contextlib.suppress(BaseException):
                for h in logging.getLogger().handlers + logging.getLogger("cello").handlers:
                    h.flush()
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _pin(self, slot: int) -> None:
        cpu = pin_to_cpu(slot, self.allowed_cpus)
        log.debug("worker %d (slot %d) pinned to CPU %d", os.getpid(), slot, cpu)

    def _serve_worker(self, ready_fd: int, listen_fd: int) -> int:
        ready = False
        os.set_blocking(ready_fd, False)  # heartbeats must never block the loop

        def on_ready(address: tuple[str, int]) -> None:
            nonlocal ready
            ready = True
            os.write(ready_fd, b"ready\n")

        def on_executor(executor: Any) -> None:
            os.write(ready_fd, f"timeout {executor.worker_timeout}\n".encode())

        def on_beat() -> None:
            # Never block the loop on a supervisor that does not read: a full pipe already
            # says "alive".
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(ready_fd, b"beat\n")

        try:
            self.app._serve(self.opts, on_ready=on_ready, on_beat=on_beat, on_executor=on_executor,
                            listen_fd=listen_fd)  # fmt: skip
        except SystemExit as exc:  # a second SIGTERM/SIGINT: quit now
            return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
        except Exception as exc:
            if ready:
                log.exception("worker %d stopped with an error", os.getpid())
                return EXIT_FAILURE
            if self.opts.debug:
                import traceback

                traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"error " + _one_line(exc).encode(errors="replace") + b"\n")
            return EXIT_STARTUP
        return EXIT_OK

    # -- events --

    def read_pipe(self, worker: Worker) -> None:
        try:
            data = os.read(worker.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            worker.buf += data
            while b"\n" in worker.buf:
                line, worker.buf = worker.buf.split(b"\n", 1)
                self.on_message(worker, line.decode(errors="replace"))
            return
        self.close_pipe(worker)

    def close_pipe(self, worker: Worker) -> None:
        if worker.fd >= 0:
            self.selector.unregister(worker.fd)
            os.close(worker.fd)
            worker.fd = -1

    def on_message(self, worker: Worker, line: str) -> None:
        if line == "beat":
            worker.last_beat = time.monotonic()
        elif line == "ready":
            worker.last_beat = time.monotonic()
            worker.ready = True
            worker.started = time.monotonic()
            self.on_ready(worker)
        elif line.startswith("error "):
            worker.error = line[6:]
        elif line.startswith("timeout "):
            with contextlib.suppress(ValueError):
                worker.timeout = float(line[8:])

    def check_heartbeats(self, now: float) -> None:
        """SIGKILL a ready worker whose event loop stopped turning (gunicorn's ``--timeout``):
        its Python thread is stuck, e.g. in a handler that never returns. It is then replaced
        like any crashed worker."""
        for w in self.workers.values():
            if not w.ready or w.hung or w.timeout is None or w.fd < 0:
                continue
            silent = now - w.last_beat
            if silent >= w.timeout:
                log.error(
                    "worker %d: its event loop has not turned for %.1f s (worker timeout %.1f s): SIGKILL",
                    w.pid,
                    silent,
                    w.timeout,
                )
                w.hung = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)

    def on_ready(self, worker: Worker) -> None:
        if not self.booted and all(w.ready for w in self.workers.values()) and len(self.workers) == self.opts.workers:
            self.booted = True
            _banner(self.opts, (self.opts.host, self.opts.port), self.opts.workers, ", supervisor")
        if self.rollout_new == worker.pid:
            self.rollout_new = None
            old = self.rollout.popleft()
            if old in self.workers:
                log.info("worker %d is ready: stopping worker %d", worker.pid, old)
                self.retire(self.workers[old])
            self.next_rollout()

    def on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return  # reap() runs after every wake-up
        if sig in (signal.SIGTERM, signal.SIGINT):
            if self.stopping_since is None:
                log.info("%s: stopping %d workers (graceful, %.0f s max)", _signal_name(sig), len(self.workers),
                         self.opts.shutdown_timeout)  # fmt: skip
                self.stop(EXIT_OK)
            else:
                log.warning("%s again: killing the workers now", _signal_name(sig))
                self.exit_code = EXIT_FAILURE
                self.kill_all()
        elif sig == signal.SIGHUP and self.stopping_since is None:
            if self.rollout or self.rollout_new is not None:
                log.info("SIGHUP: a rolling restart is already in progress")
                return
            self.rollout = deque(pid for pid, w in self.workers.items() if not w.retiring)
            log.info("SIGHUP: replacing %d workers one by one", len(self.rollout))
            self.next_rollout()

    def next_rollout(self) -> None:
        while self.rollout and self.rollout[0] not in self.workers:
            self.rollout.popleft()  # died meanwhile; the crash path replaced it
        if not self.rollout:
            return
        old = self.workers[self.rollout[0]]
        new = self.spawn(old.slot)  # on the old worker's socket: its accept queue carries over
        if new is None:
            self.rollout.clear()
            return
        self.rollout_new = new.pid

    def reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            # Read what is left in its pipe (a startup error line written just before exit); the
            # writer is gone, so this ends at EOF, but never spin on a pipe someone else holds.
            for _ in range(64):
                if worker.fd < 0:
                    break
                self.read_pipe(worker)
            self.close_pipe(worker)
            self.on_exit(worker, status)

    def on_exit(self, worker: Worker, status: int) -> None:
        how = _describe_status(status)
        if self.stopping_since is not None or worker.retiring:
            log.debug("worker %d stopped (%s)", worker.pid, how)
            return
        if self.rollout_new == worker.pid:  # a replacement failed: keep the old worker
            self.rollout_new = None
            self.rollout.clear()
            log.error("worker %d (rolling restart) died before it was ready (%s): keeping the old workers",
                      worker.pid, how)  # fmt: skip
            return
        if not worker.ready and not self.booted:
            reason = worker.error or how
            print(f"cello: the app failed to start: {reason}", file=sys.stderr, flush=True)
            self.stop(EXIT_STARTUP)
            return
        now = time.monotonic()
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > CRASH_WINDOW:
            self.crashes.popleft()
        slot = worker.slot
        if worker.ready and now - worker.started >= BACKOFF_RESET_AFTER:
            self.backoff[slot] = BACKOFF_START
        delay = self.backoff[slot]
        self.backoff[slot] = min(delay * 2, BACKOFF_MAX)
        over_budget = len(self.crashes) > self.opts.max_restarts
        if over_budget:
            delay = BACKOFF_MAX
        log.warning("worker %d died unexpectedly (%s); restarting in %.1f s", worker.pid, how, delay)
        if (delay > KEEP_QUEUE_MAX or not worker.ready) and not any(w.slot == slot for w in self.workers.values()):
            self.close_listener(slot)
        if over_budget:
            log.warning("%d worker crashes within %.0f s (max restarts %d): restarts are slowed to one per %.0f s "
                        "per worker", len(self.crashes), CRASH_WINDOW, self.opts.max_restarts, BACKOFF_MAX)  # fmt: skip
        self.restart_at[slot] = now + delay

    # -- stopping --

    def retire(self, worker: Worker) -> None:
        worker.retiring = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)

    def stop(self, code: int) -> None:
        self.exit_code = code
        self.stopping_since = time.monotonic()
        self.stop_deadline = self.stopping_since + self.opts.shutdown_timeout + HOOK_GRACE
        self.restart_at.clear()
        self.rollout.clear()
        # No new connections: the workers drain what they have accepted and close their copies.
        self.close_listeners()
        for w in self.workers.values():
            if not w.retiring:
                self.retire(w)

    def kill_all(self) -> None:
        for w in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
        # They are reaped by the next step(); SIGKILL cannot be ignored.
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        self.stop_deadline = time.monotonic() + 5.0
        self.restart_at.clear()
        self.close_listeners()


# ---- reload -------------------------------------------------------------------------------------


def scan(dirs: list[str]) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every .py and .proto file under ``dirs`` (gRPC services compile their
    ``.proto`` at start-up), skipping virtualenvs, VCS and build trees."""
    found: dict[str, tuple[int, int]] = {}
    for top in dirs:
        for root, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS and not d.startswith(".")]
            for name in files:
                if name.endswith((".py", ".proto")):
                    path = os.path.join(root, name)
                    with contextlib.suppress(OSError):
                        st = os.stat(path)
                        found[path] = (st.st_mtime_ns, st.st_size)
    return found


def _changed(old: dict, new: dict) -> list[str]:
    return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))


class Reloader:
    """Runs ``argv`` as the server process and starts a fresh one when a .py or .proto file changes."""

    def __init__(self, opts: _cli.RunOptions, argv: list[str]) -> None:
        self.opts = opts
        self.argv = argv
        self.dirs = [os.path.abspath(d) for d in (opts.reload_dirs or [os.getcwd()])]
        self.selector = selectors.DefaultSelector()
        self.child: subprocess.Popen | None = None
        self.stopping = False

    def run(self) -> int:
        try:
            sock = reserve_port(self.opts.host, self.opts.port)
        except StartupError as exc:
            print(f"cello: the app failed to start: {exc}", file=sys.stderr, flush=True)
            return EXIT_STARTUP
        port = sock.getsockname()[1]
        self.env = {**os.environ, _cli.RELOADER_PORT_ENV: str(port)}
        self.signals = _Signals(self.selector)
        try:
            _banner(self.opts, (self.opts.host, port), 1, f", reload on, watching {', '.join(self.dirs)}")
            files = scan(self.dirs)
            self.start()
            while True:
                self.selector.select(RELOAD_POLL)
                self.signals.drain_pipe()
                if self.handle_signals():
                    return EXIT_OK
                if self.child is not None and self.child.poll() is not None:
                    code = self.child.returncode
                    log.warning("server process exited (code %s); waiting for a change", code)
                    self.child = None
                new = scan(self.dirs)
                changed = _changed(files, new)
                if changed:
                    files = new
                    shown = ", ".join(os.path.relpath(p) for p in changed[:3])
                    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
                    log.info("changed: %s%s; restarting", shown, more)
                    self.stop_child(min(self.opts.shutdown_timeout, RELOAD_GRACE))
                    if self.stopping:
                        return EXIT_OK
                    self.start()
        finally:
            if self.child is not None:
                self.stop_child(self.opts.shutdown_timeout)
            self.signals.restore()
            self.selector.close()
            sock.close()

    def handle_signals(self) -> bool:
        """True when asked to stop (the child is then stopped already)."""
        terminal_ctrl_c = False
        for sig in self.signals.pop():
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
                terminal_ctrl_c = sig == signal.SIGINT and _foreground_of_terminal()
        if self.stopping:
            # Ctrl-C in a terminal reached the server process too (same process group, so a
            # debugger in it can read the terminal); a second signal would make it quit at once.
            self.stop_child(self.opts.shutdown_timeout, signal_it=not terminal_ctrl_c)
            return True
        return False

    def start(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # preexec_fn is safe here: the reloader has no threads.
        self.child = subprocess.Popen(self.argv, env=self.env, preexec_fn=_child_setup)  # noqa: PLW1509

    def stop_child(self, grace: float, signal_it: bool = True) -> None:
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        if signal_it:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + HOOK_GRACE
        while child.poll() is None and time.monotonic() < deadline:
            self.selector.select(0.05)
            self.signals.drain_pipe()
            if any(s in (signal.SIGTERM, signal.SIGINT) for s in self.signals.pop()):
                if self.stopping:
                    break  # a second signal: do not wait
                self.stopping = True
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        child.wait()


def _child_setup() -> None:
    # No orphaned server when the reloader is killed.
    _set_parent_death_signal(signal.SIGTERM)


def _foreground_of_terminal() -> bool:
    """Whether our process group owns the terminal (so a SIGINT came from Ctrl-C to all of it)."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False
