"""Command-line options shared by ``app.run()`` and the ``cello`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass


@dataclass
class RunOptions:
    host: str
    port: int
    env: str
    debug: bool
    workers: int
    reload: bool
    logs: bool
    access_log: bool = False
    shutdown_timeout: float = 30.0


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--env")
    p.add_argument("--debug", action="store_true", default=None)
    p.add_argument("--reload", action="store_true", default=None)
    p.add_argument("--workers")
    p.add_argument("--no-logs", dest="logs", action="store_false", default=None)
    return p


def resolve_run_options(*, host, port, debug, env, workers, reload, logs, argv=None) -> RunOptions:
    """Flags on the command line win over ``run()`` arguments; then ``CELLO_*`` variables."""
    args, _ = _run_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    host = args.host or os.environ.get("CELLO_HOST") or host
    port = args.port if args.port is not None else int(os.environ.get("CELLO_PORT", port))
    env = args.env or env or os.environ.get("CELLO_ENV") or "development"
    if args.debug:
        debug = True
    elif debug is None:
        debug = env == "development"
    workers_raw = args.workers or workers or os.environ.get("CELLO_WORKERS") or 1
    workers = os.cpu_count() or 1 if workers_raw == "auto" else int(workers_raw)
    reload = bool(args.reload or reload)
    if args.logs is False:
        logs = False
    elif logs is None:
        logs = bool(debug)
    access_log = bool(logs) and os.environ.get("CELLO_ACCESS_LOG", "1") != "0"
    return RunOptions(
        host=host,
        port=port,
        env=env,
        debug=bool(debug),
        workers=workers,
        reload=reload,
        logs=logs,
        access_log=access_log,
    )


def configure_logging(enabled: bool) -> None:
    """Send ``cello.*`` records to stderr unless the app configured logging itself."""
    logger = logging.getLogger("cello")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
