"""Command-line options shared by ``app.run()`` and the ``cello`` command.

Every option has a flag (uvicorn's name where uvicorn has one) and a ``CELLO_<NAME>`` variable.
Precedence, highest first: flag, ``CELLO_*`` variable, ``run()`` argument or command default.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from dataclasses import dataclass, field

from . import _env

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
DEFAULT_MAX_RESTARTS = 5  # ClusterConfig.max_restarts
# Set by the reloader in the server process it spawns: serve on this port, never reload again.
RELOADER_PORT_ENV = "CELLO_RELOADER_PORT"


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
    log_level: str | None = None
    log_format: str = "text"
    health_checks: bool | None = None
    root_path: str = ""
    forwarded_allow_ips: list[str] | None = None
    max_restarts: int = DEFAULT_MAX_RESTARTS
    worker_timeout: float | None = None  # None: TimeoutConfig.worker_timeout (default 30)
    cpu_affinity: bool = False  # ClusterConfig.cpu_affinity: pin each worker to one CPU
    reload_dirs: list[str] = field(default_factory=list)
    ssl_certfile: str | None = None  # HTTPS: PEM certificate chain (with ssl_keyfile)
    ssl_keyfile: str | None = None
    ssl_ca_certs: str | None = None  # mutual TLS: clients must present a certificate this CA signs
    app_spec: str | None = None  # "module:attr" as given to the cello command; None for app.run()


class UsageError(Exception):
    """A bad combination of options: reported like an argparse error (exit code 2)."""


# ---- flags ------------------------------------------------------------------------------------


def _bool_flag(p: argparse.ArgumentParser, name: str, dest: str, help: str) -> None:
    """``--name`` / ``--no-name``; None when neither is given (so variables and defaults apply)."""
    p.add_argument(name, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The serving flags, shared by ``cello run``, ``cello dev`` and ``app.run()``."""
    p.add_argument("--host", help="interface to bind (CELLO_HOST)")
    p.add_argument("--port", type=int, help="port to bind; 0 picks a free one (CELLO_PORT, then PORT)")
    p.add_argument("--workers", help="worker processes, a number or 'auto' = the CPU quota (CELLO_WORKERS)")
    _bool_flag(p, "--reload", "reload", "restart when .py files change (CELLO_RELOAD)")
    p.add_argument(
        "--reload-dir", dest="reload_dirs", action="append", metavar="DIR", help="directory to watch (default: cwd)"
    )
    p.add_argument("--env", help="environment name, e.g. production or development (CELLO_ENV)")
    _bool_flag(p, "--debug", "debug", "debug mode: tracebacks in error responses (CELLO_DEBUG)")
    p.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, help="log level (CELLO_LOG_LEVEL)")
    p.add_argument("--no-logs", dest="logs", action="store_false", default=None, help="only warnings and errors")
    p.add_argument("--log-format", type=str.lower, choices=("text", "json"), help="log line format (CELLO_LOG_FORMAT)")
    _bool_flag(p, "--health-checks", "health_checks", "serve /health/live|ready|startup (CELLO_HEALTH_CHECKS)")
    _bool_flag(p, "--access-log", "access_log", "log every request (CELLO_ACCESS_LOG)")
    p.add_argument(
        "--root-path", metavar="PATH", help="path prefix the app is mounted under behind a proxy (CELLO_ROOT_PATH)"
    )
    p.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="comma-separated proxy IPs/CIDRs trusted for X-Forwarded-* headers, or '*' (CELLO_FORWARDED_ALLOW_IPS)",
    )
    p.add_argument(
        "--timeout-graceful-shutdown",
        dest="shutdown_timeout",
        metavar="SECONDS",
        type=float,
        help="seconds to let in-flight requests finish on shutdown (CELLO_TIMEOUT_GRACEFUL_SHUTDOWN, default 30)",
    )
    p.add_argument(
        "--worker-timeout",
        dest="worker_timeout",
        metavar="SECONDS",
        type=float,
        help="a worker whose event loop has not turned for this long is stuck: /health/live answers 503 "
        "and the supervisor replaces it (CELLO_WORKER_TIMEOUT, default TimeoutConfig.worker_timeout = 30)",
    )
    p.add_argument(
        "--ssl-certfile", metavar="FILE", help="serve HTTPS with this PEM certificate chain (CELLO_TLS_CERT_FILE)"
    )
    p.add_argument("--ssl-keyfile", metavar="FILE", help="PEM private key of --ssl-certfile (CELLO_TLS_KEY_FILE)")
    p.add_argument(
        "--ssl-ca-certs",
        metavar="FILE",
        help="PEM CA bundle: require client certificates it signs, mutual TLS (CELLO_TLS_CA_FILE)",
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        metavar="N",
        help="quick worker restarts per minute; beyond it restarts wait the full backoff (CELLO_MAX_RESTARTS)",
    )


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    add_run_arguments(p)
    return p


# ---- resolution -------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(name: str, environ) -> bool | None:
    raw = _env.lookup(name, environ)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{name}={raw!r}: expected 1/0, true/false, yes/no or on/off")


def _env_num(name: str, environ, kind):
    raw = _env.lookup(name, environ) if name.startswith("CELLO_") else environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number") from None


def _first(*values):
    for v in values:
        if v is not None:
            return v
    return None


def parse_workers(raw) -> int:
    """``N`` (>= 1) or ``auto``."""
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return auto_workers()
    try:
        n = int(raw)
    except (TypeError, ValueError):
        raise UsageError(f"--workers: expected a number or 'auto', got {raw!r}") from None
    if n < 1:
        raise UsageError(f"--workers must be at least 1, got {n}")
    return n


def options_from_args(args: argparse.Namespace, defaults: dict, environ=None) -> RunOptions:
    """Merge parsed flags, ``CELLO_*`` variables and ``defaults`` (``run()`` arguments or command defaults)."""
    environ = os.environ if environ is None else environ
    d = defaults
    host = _first(args.host, _env.lookup("CELLO_HOST", environ) or None, d.get("host"), "127.0.0.1")
    port = _first(args.port, _env_num("CELLO_PORT", environ, int), _env_num("PORT", environ, int), d.get("port"), 8000)
    env = _first(args.env, _env.lookup("CELLO_ENV", environ) or None, d.get("env"), "development")
    debug = _first(args.debug, _env_bool("CELLO_DEBUG", environ), d.get("debug"))
    if debug is None:
        debug = env == "development"
    workers = parse_workers(_first(args.workers, _env.lookup("CELLO_WORKERS", environ) or None, d.get("workers"), 1))
    reload = bool(_first(args.reload, _env_bool("CELLO_RELOAD", environ), d.get("reload"), False))
    log_level = _first(
        args.log_level, (_env.lookup("CELLO_LOG_LEVEL", environ) or "").lower() or None, d.get("log_level")
    )
    if log_level is not None and log_level not in LOG_LEVELS:
        raise UsageError(f"log level {log_level!r}: choose from {', '.join(LOG_LEVELS)}")
    logs = _first(args.logs, d.get("logs"))
    if logs is None:
        logs = bool(debug) or log_level is not None
    access_log = _first(args.access_log, _env_bool("CELLO_ACCESS_LOG", environ), d.get("access_log"))
    if access_log is None:
        access_log = bool(logs)
    root_path = _first(args.root_path, _env.lookup("CELLO_ROOT_PATH", environ), d.get("root_path"), "")
    if root_path and not root_path.startswith("/"):
        raise UsageError(f"--root-path must start with '/', got {root_path!r}")
    proxies_raw = _first(args.forwarded_allow_ips, _env.lookup("CELLO_FORWARDED_ALLOW_IPS", environ))
    proxies = [p.strip() for p in proxies_raw.split(",") if p.strip()] if proxies_raw is not None else None
    shutdown_timeout = _first(
        args.shutdown_timeout,
        _env_num("CELLO_TIMEOUT_GRACEFUL_SHUTDOWN", environ, float),
        d.get("shutdown_timeout"),
        30.0,
    )
    if shutdown_timeout < 0:
        raise UsageError("--timeout-graceful-shutdown must not be negative")
    max_restarts = _first(
        args.max_restarts, _env_num("CELLO_MAX_RESTARTS", environ, int), d.get("max_restarts"), DEFAULT_MAX_RESTARTS
    )
    if max_restarts < 0:
        raise UsageError("--max-restarts must not be negative")
    worker_timeout = _first(
        getattr(args, "worker_timeout", None),
        _env_num("CELLO_WORKER_TIMEOUT", environ, float),
        d.get("worker_timeout"),
    )
    if worker_timeout is not None and not (math.isfinite(worker_timeout) and worker_timeout > 0):
        raise UsageError("--worker-timeout must be a positive number of seconds")
    reload_dirs = list(args.reload_dirs or [])
    ssl_certfile = _first(getattr(args, "ssl_certfile", None), _env.get("CELLO_TLS_CERT_FILE", environ))
    ssl_keyfile = _first(getattr(args, "ssl_keyfile", None), _env.get("CELLO_TLS_KEY_FILE", environ))
    ssl_ca_certs = _first(getattr(args, "ssl_ca_certs", None), _env.get("CELLO_TLS_CA_FILE", environ))
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise UsageError("--ssl-certfile and --ssl-keyfile go together (CELLO_TLS_CERT_FILE / CELLO_TLS_KEY_FILE)")
    if ssl_ca_certs and not ssl_certfile:
        raise UsageError("--ssl-ca-certs needs --ssl-certfile and --ssl-keyfile")

    # The server process started by the reloader: fixed port, no second reloader.
    reloader_port = _env.lookup(RELOADER_PORT_ENV, environ)
    if reloader_port:
        port, reload = int(reloader_port), False

    if reload and workers > 1:
        raise UsageError("--reload cannot be combined with --workers > 1 (the reloader runs one server process)")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    return RunOptions(
        host=host,
        port=int(port),
        env=env,
        debug=bool(debug),
        workers=workers,
        reload=reload,
        logs=bool(logs),
        access_log=bool(access_log),
        shutdown_timeout=float(shutdown_timeout),
        log_level=log_level,
        log_format=_first(
            getattr(args, "log_format", None), (_env.lookup("CELLO_LOG_FORMAT", environ) or "").lower() or None
        )
        or "text",
        health_checks=_first(
            getattr(args, "health_checks", None), _env_bool("CELLO_HEALTH_CHECKS", environ), d.get("health_checks")
        ),
        root_path=root_path,
        forwarded_allow_ips=proxies,
        max_restarts=max_restarts,
        worker_timeout=None if worker_timeout is None else float(worker_timeout),
        cpu_affinity=bool(d.get("cpu_affinity", False)),
        reload_dirs=reload_dirs,
        app_spec=d.get("app_spec"),
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        ssl_ca_certs=ssl_ca_certs,
    )


def tls_section(opts: RunOptions) -> dict | None:
    """The ``tls`` section (``cello_config::TlsConfig``) the ``--ssl-*`` options ask for."""
    if not opts.ssl_certfile:
        return None
    out = {"cert_path": opts.ssl_certfile, "key_path": opts.ssl_keyfile}
    if opts.ssl_ca_certs:
        out.update(ca_path=opts.ssl_ca_certs, require_client_cert=True)
    return out


def cluster_defaults(cluster) -> dict:
    """``ClusterConfig`` as run defaults (flags and ``CELLO_*`` variables still win).

    ``graceful_shutdown=False`` means no drain: in-flight requests are cut at once.
    """
    if cluster is None:
        return {}
    out = {
        "max_restarts": cluster.max_restarts,
        "shutdown_timeout": float(cluster.shutdown_timeout) if cluster.graceful_shutdown else 0.0,
        "cpu_affinity": bool(cluster.cpu_affinity),
    }
    if cluster.workers is not None:
        out["workers"] = cluster.workers
    return out


def resolve_run_options(*, host, port, debug, env, workers, reload, logs, argv=None, cluster=None) -> RunOptions:
    """Options for ``app.run()``: its arguments are the defaults; flags in ``argv`` and ``CELLO_*`` win.

    Unknown flags are left alone (the script may have its own); a bad value for a known flag or a
    bad combination exits with code 2, as argparse does.
    """
    parser = _run_parser()
    parser.prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "cello"
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    # Probes are on by default, as for `cello run` (`--no-health-checks` turns them off).
    defaults = {"host": host, "port": port, "debug": debug, "env": env, "reload": reload, "logs": logs,
                "health_checks": True, **cluster_defaults(cluster)}  # fmt: skip
    if workers is not None:  # an explicit run(workers=...) beats ClusterConfig.workers
        defaults["workers"] = workers
    try:
        return options_from_args(args, defaults)
    except UsageError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


# ---- workers=auto -----------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: str | None = None) -> float | None:
    """CPUs granted by the cgroup CPU quota (e.g. 1.5), or None when unlimited or unknown.

    cgroup v2: ``cpu.max`` is "QUOTA PERIOD" or "max PERIOD". cgroup v1: ``cpu.cfs_quota_us``
    (-1 = unlimited) over ``cpu.cfs_period_us``. Inside a container the process's cgroup is
    mounted at the root; on a host it is the path named in /proc/self/cgroup.
    """
    root = root or _env.lookup("CELLO_CGROUP_ROOT") or "/sys/fs/cgroup"
    v2_dirs = [root]
    v1_dirs = [os.path.join(root, "cpu"), os.path.join(root, "cpu,cpuacct"), root]
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[2] in ("", "/"):
            continue
        rel = parts[2].lstrip("/")
        if parts[0] == "0":
            v2_dirs.append(os.path.join(root, rel))
        elif "cpu" in parts[1].split(","):
            v1_dirs.insert(0, os.path.join(root, "cpu", rel))
    for d in v2_dirs:
        raw = _read(os.path.join(d, "cpu.max"))
        if raw is not None:
            return parse_cpu_max(raw)
    for d in v1_dirs:
        quota, period = _read(os.path.join(d, "cpu.cfs_quota_us")), _read(os.path.join(d, "cpu.cfs_period_us"))
        if quota is not None and period is not None:
            return parse_cfs_quota(quota, period)
    return None


def parse_cpu_max(raw: str) -> float | None:
    parts = raw.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs_quota(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def auto_workers() -> int:
    """One worker per CPU the quota grants (rounded up), never more than the CPUs we may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


# ---- logging ----------------------------------------------------------------------------------


def configure_logging(enabled: bool, level: str | None = None) -> None:
    """Send ``cello.*`` records to stderr unless the app configured logging itself.

    ``level`` (``--log-level``) wins; otherwise INFO when logs are enabled, WARNING when not.
    """
    logger = logging.getLogger("cello")
    if level is not None:
        name = "DEBUG" if level == "trace" else level.upper()
        logger.setLevel(getattr(logging, name))
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    if level is None:
        logger.setLevel(logging.INFO if enabled else logging.WARNING)
