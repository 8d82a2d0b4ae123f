"""The ``cello`` command (also ``python -m cello``).

    cello run [APP]      serve: 127.0.0.1:8000 (or $PORT), env production, no reload;
                         --host 0.0.0.0 (or CELLO_HOST) to serve other machines
    cello dev [APP]      develop: 127.0.0.1:8000, reload, debug tracebacks, access log
    cello routes [APP]   print the route table
    cello openapi [APP]  print the OpenAPI 3.1 document (JSON)
    cello consume TARGET run message consumers: TARGET is module:handler (one decorated
                         consumer) or module / module:app (every consumer the module declares);
                         --queue NAME takes the broker from the operator's queue binding

APP is ``module:attr``, ``module`` (attr ``app``), ``path/to/app.py[:attr]``, or omitted to
use ``[tool.cello] app`` from ./pyproject.toml. Exit codes: 0 ok, 1 failure while serving,
2 usage error, 3 the app failed to start.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import _cli, _loader

# Per-command defaults, below flags and CELLO_* variables.
# Health probes are on by default for both (`--no-health-checks` turns them off).
RUN_DEFAULTS = {"host": "127.0.0.1", "env": "production", "reload": False, "logs": True, "access_log": False,
                "health_checks": True}  # fmt: skip
# `cello consume`: the admin port (probes, metrics) listens on every interface for the kubelet.
CONSUME_DEFAULTS = {"host": "0.0.0.0", "env": "production", "reload": False, "logs": True, "access_log": False}
DEV_DEFAULTS = {"host": "127.0.0.1", "env": "development", "debug": True, "reload": True, "logs": True,
                "access_log": True, "health_checks": True}  # fmt: skip


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and its sub-command parsers (their ``error()`` prints the right usage)."""
    subs = {}
    parser = argparse.ArgumentParser(prog="cello", description="Run and inspect Cello apps.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    app_help = "module:attr, module, path/to/app.py[:attr]; default: [tool.cello] app in pyproject.toml"
    for name, help_text in (("run", "serve the app (production defaults)"), ("dev", "serve with reload and debug")):
        subs[name] = p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("app", nargs="?", metavar="APP", help=app_help)
        _cli.add_run_arguments(p)
    subs["routes"] = p = sub.add_parser("routes", help="print the route table", description="print the route table")
    p.add_argument("app", nargs="?", metavar="APP", help=app_help)
    subs["openapi"] = p = sub.add_parser("openapi", help="print the OpenAPI document",
                                         description="print the OpenAPI 3.1 document as JSON")  # fmt: skip
    p.add_argument("app", nargs="?", metavar="APP", help=app_help)
    subs["consume"] = add_consume_parser(sub)
    return parser, subs


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("cello-framework")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subs = build_parser()
    args = parser.parse_args(argv)
    sub = subs[args.command]
    if args.command == "consume":
        return _consume(args, sub)
    try:
        spec = _loader.resolve_spec(args.app)
    except _loader.AppNotFound as exc:
        sub.error(str(exc))
    except _loader.AppLoadError as exc:
        return _startup_failure(exc)
    if args.command == "routes":
        return _routes(spec)
    if args.command == "openapi":
        return _openapi(spec)

    defaults = dict(DEV_DEFAULTS if args.command == "dev" else RUN_DEFAULTS, app_spec=spec)
    try:
        opts = _cli.options_from_args(args, defaults)
    except _cli.UsageError as exc:
        sub.error(str(exc))

    from ._supervisor import run_app

    if opts.reload:
        # The reloader must not import the app: a syntax error is something to wait out. Each
        # server process re-runs this very command (the reloader's env var turns reload off).
        return run_app(None, opts, reload_argv=[sys.executable, "-m", "cello", *argv])
    try:
        app = _loader.load_app(spec)
    except _loader.AppLoadError as exc:
        return _startup_failure(exc)
    cluster = getattr(app, "_cluster", None)
    if cluster is not None:  # the app's ClusterConfig sits between the command defaults and flags
        try:
            opts = _cli.options_from_args(args, {**defaults, **_cli.cluster_defaults(cluster)})
        except _cli.UsageError as exc:
            sub.error(str(exc))
    code = run_app(app, opts)
    _exit_past_stuck_handlers(code)
    return code


def _exit_past_stuck_handlers(code: int) -> None:
    """After the drain, a blocking handler still running in the pool would hold the process
    until it returns (the interpreter joins pool threads at exit): the drain's deadline is the
    stop, so leave without them."""
    import logging
    import os
    import threading

    pool = [t for t in threading.enumerate() if t.name.startswith("cello-pool")]
    for t in pool:  # idle ones are just leaving
        t.join(0.2)
    stuck = [t for t in pool if t.is_alive()]
    if not stuck:
        return
    logging.getLogger("cello").warning("%d blocking handler(s) still running after the drain: exiting", len(stuck))
    for handler in logging.getLogger().handlers + logging.getLogger("cello").handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _startup_failure(exc: Exception) -> int:
    print(f"cello: the app failed to start: {exc}", file=sys.stderr, flush=True)
    return 3


# ---- cello routes -------------------------------------------------------------------------------


def _name(obj: Any) -> str:
    qualname = getattr(obj, "__qualname__", None)
    if qualname and not isinstance(obj, type) and callable(obj) and hasattr(obj, "__code__"):
        module = getattr(obj, "__module__", None)
        return f"{module}.{qualname}" if module else qualname
    if isinstance(obj, type):
        return obj.__qualname__
    return repr(obj)


def route_rows(app: Any) -> list[tuple[str, str, str, str]]:
    rows = []
    for r in app._flatten():
        guards = ", ".join(_name(g) for g in r.guards) or "-"
        rows.append((",".join(r.methods), r.path, _name(r.handler), guards))
    return rows


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)]
    return "\n".join(lines)


def _routes(spec: str) -> int:
    try:
        app = _loader.load_app(spec)
    except _loader.AppLoadError as exc:
        return _startup_failure(exc)
    rows = route_rows(app)
    print(format_table(rows, ("METHOD", "PATH", "HANDLER", "GUARDS")))
    if not rows:
        print("(no routes)", file=sys.stderr)
    return 0


def _openapi(spec: str) -> int:
    import json

    try:
        app = _loader.load_app(spec)
    except _loader.AppLoadError as exc:
        return _startup_failure(exc)
    print(json.dumps(app.openapi(), indent=2, ensure_ascii=False))
    return 0


# ---- cello consume ------------------------------------------------------------------------------

CONSUME_DEFAULT_ADMIN_PORT = 8081


def add_consume_parser(sub: Any) -> argparse.ArgumentParser:
    help_text = "run message consumers (module:handler, or module / module:app for all it declares)"
    p = sub.add_parser("consume", help=help_text, description=help_text)
    p.add_argument("target", metavar="TARGET", help="module:handler, module:app or module")
    p.add_argument("--queue", metavar="NAME", help="operator queue binding (CELLO_QUEUE_<NAME>_*) naming the broker")
    p.add_argument("--workers", help="worker processes, a number or 'auto' (CELLO_WORKERS)")
    p.add_argument(
        "--admin-port",
        type=int,
        metavar="PORT",
        help="port of /health/live, /health/ready and /metrics "
        f"(default {CONSUME_DEFAULT_ADMIN_PORT}; 0 picks a free one)",
    )
    p.add_argument("--host", help="interface of the admin port (CELLO_HOST, default 0.0.0.0)")
    p.add_argument(
        "--startup-timeout",
        type=float,
        metavar="SECONDS",
        help="exit with code 3 when the broker stays unreachable this long at start (default 10)",
    )
    p.add_argument(
        "--timeout-graceful-shutdown",
        dest="shutdown_timeout",
        type=float,
        metavar="SECONDS",
        help="seconds to let in-flight messages finish on SIGTERM (default 30)",
    )
    p.add_argument(
        "--metrics-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between two reads of the consumer lag / queue depth gauges from the broker (default 10)",
    )
    p.add_argument("--log-level", type=str.lower, choices=_cli.LOG_LEVELS, help="log level (CELLO_LOG_LEVEL)")
    p.add_argument("--max-restarts", type=int, metavar="N", help="quick restarts per minute (CELLO_MAX_RESTARTS)")
    return p


def _consume(args: argparse.Namespace, sub: argparse.ArgumentParser) -> int:
    from . import bindings, messaging

    run_args = _cli._run_parser().parse_args([])
    run_args.workers, run_args.log_level = args.workers, args.log_level
    run_args.shutdown_timeout, run_args.max_restarts = args.shutdown_timeout, args.max_restarts
    run_args.host = args.host
    run_args.port = CONSUME_DEFAULT_ADMIN_PORT if args.admin_port is None else args.admin_port
    try:
        opts = _cli.options_from_args(run_args, {**CONSUME_DEFAULTS, "app_spec": args.target})
    except _cli.UsageError as exc:
        sub.error(str(exc))
    try:
        _, obj = _loader.load_object(args.target, default_attr=None)
    except _loader.AppLoadError as exc:
        return _startup_failure(exc)
    specs = messaging.consumers_of(obj)
    if not specs:
        return _startup_failure(Exception(f"{args.target} declares no consumer (@redis_consumer, ...)"))
    if args.queue:
        try:
            found = bindings.queue_bindings()
        except ValueError as exc:
            return _startup_failure(exc)
        if args.queue not in found:
            listed = ", ".join(sorted(found)) or "none"
            return _startup_failure(Exception(f"--queue {args.queue}: no such binding in CELLO_QUEUES ({listed})"))
        try:
            specs = [messaging.apply_binding(s, found[args.queue]) for s in specs]
        except ValueError as exc:
            return _startup_failure(exc)
    startup_timeout = args.startup_timeout if args.startup_timeout is not None else 10.0
    if not args.metrics_interval >= 0.01:  # NaN too
        sub.error(f"--metrics-interval must be at least 0.01 seconds, got {args.metrics_interval}")
    app = messaging.ConsumerApp(specs, startup_timeout=startup_timeout, metrics_interval=args.metrics_interval,
                                telemetry=messaging.telemetry_of(obj))  # fmt: skip

    from ._supervisor import run_app

    return run_app(app, opts)


if __name__ == "__main__":  # pragma: no cover - `python -m cello` goes through __main__.py
    sys.exit(main())
