"""``App``: route registration, hooks and configuration, compiled once at start-up."""

from __future__ import annotations

import inspect
import json
import re
import threading
import types
from collections.abc import Callable
from typing import Any

from . import _cli, _env
from ._security import SecurityMixin
from .caching import EdgeMixin
from .config import ClusterConfig, Http2Config, LimitsConfig, ThreadPoolConfig, TimeoutConfig, WebSocketConfig
from .edge import EdgeMiddleware
from .errors import FeatureNotAvailable, HTTPException
from .params import compile_endpoint
from .routing import Blueprint, Routes

_PARAM = re.compile(r"\{\*?([A-Za-z_][A-Za-z0-9_]*)(?::(?:[^{}]|\{[^{}]*\})*)?\}")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif key == "enabled" and isinstance(value, bool):
            # A feature the app's code turned on stays on.
            out[key] = bool(out.get(key)) or value
        else:
            out[key] = value
    return out


def _with_config_file(config: dict[str, Any], path: str | None) -> dict[str, Any]:
    """Overlay ``cello.yaml`` (``CELLO_CONFIG``, mounted by the operator from ``spec.server``):
    the deployment's file wins over the code's settings; the listener and debug flags stay as
    the command line says."""
    if not path:
        return config
    from . import _cello

    file_config = json.loads(_cello.load_config_file(path))
    merged = _merge(json.loads(_cello.normalize_config(json.dumps(config))), file_config)
    for key in ("host", "port", "debug", "accessLog"):
        merged[key] = config[key]
    if config.get("rootPath"):
        merged["rootPath"] = config["rootPath"]
    return merged


def _refuse_push(enabled: bool) -> None:
    if enabled:
        raise FeatureNotAvailable(
            "Http2Config(enable_push=True): HTTP/2 server push",
            hint="push is deprecated (browsers removed it) and Cello will not support it; "
            "send `Link: <...>; rel=preload` headers instead",
        )


class App(SecurityMixin, EdgeMiddleware, Routes, EdgeMixin):
    """A Cello application."""

    def __init__(self, *, lifespan: Callable[[App], Any] | None = None) -> None:
        super().__init__("")
        self.state = types.SimpleNamespace()
        self.dependency_overrides: dict[Any, Any] = {}
        self._singletons: dict[str, Any] = {}
        self._events: dict[str, list[Callable[[], Any]]] = {"startup": [], "shutdown": []}
        self._exception_handlers: dict[type[BaseException], Callable[..., Any]] = {}
        self._lifespan = lifespan
        self._lifespan_cm: Any = None
        self._limits = LimitsConfig()
        self._timeouts = TimeoutConfig()
        self._threadpool = ThreadPoolConfig()
        self._http2 = Http2Config()
        self._websocket: WebSocketConfig | None = None
        self._trusted_proxies: list[str] = []
        self._cluster: ClusterConfig | None = None
        self._executor: Any = None
        self._lock = threading.Lock()
        self._security_init()

    # ---- configuration -------------------------------------------------------------------
    def set_limits(self, config: LimitsConfig) -> None:
        self._limits = config

    def set_timeouts(self, config: TimeoutConfig) -> None:
        self._timeouts = config

    def set_threadpool(self, config: ThreadPoolConfig) -> None:
        self._threadpool = config

    def set_http2(self, config: Http2Config) -> None:
        _refuse_push(config.enable_push)
        self._http2 = config

    def set_websocket(self, config: WebSocketConfig) -> None:
        """WebSocket keep-alive pings, idle timeout, message size limit, queue sizes and
        permessage-deflate."""
        if not isinstance(config, WebSocketConfig):
            raise TypeError(f"set_websocket() takes a WebSocketConfig, not {type(config).__name__}")
        self._websocket = config

    def set_cluster(self, config: ClusterConfig) -> None:
        """Process settings for ``run()`` and ``cello run``: ``workers``, ``max_restarts`` (quick
        restarts per minute; beyond it restarts wait the full backoff, they never stop),
        ``graceful_shutdown``/``shutdown_timeout`` (the drain on SIGTERM) and ``cpu_affinity`` (each
        worker pinned to one CPU). Command-line flags and ``CELLO_*`` variables still win."""
        if not isinstance(config, ClusterConfig):
            raise TypeError(f"set_cluster() takes a ClusterConfig, not {type(config).__name__}")
        self._cluster = config

    def set_trusted_proxies(self, proxies: list[str]) -> None:
        self._trusted_proxies = [str(p) for p in proxies]

    def enable_tls(self, config: Any) -> None:
        """Serve HTTPS (rustls): ``TlsConfig(cert_path, key_path, ca_path=None, min_version="1.2",
        max_version="1.3", require_client_cert=False)``. The files are checked now; ALPN offers
        ``h2`` and ``http/1.1``; SIGHUP re-reads them. ``--ssl-*`` flags and ``cello.yaml`` win."""
        from .config import TlsConfig, validate_tls_config

        if not isinstance(config, TlsConfig):
            raise TypeError(f"enable_tls() takes a TlsConfig, not {type(config).__name__}")
        self._tls = validate_tls_config(config)

    def enable_http3(self, config: Any = None) -> None:
        """Serve HTTP/3 over QUIC too: UDP on the same port number, the TLS certificate of
        ``enable_tls`` / ``--ssl-*`` (required), ``Alt-Svc`` on HTTP/1.1 and HTTP/2 responses.
        ``Http3Config(max_idle_timeout=30, max_udp_payload_size=1350, initial_max_streams_bidi=100,
        enable_0rtt=False)``; ``enable_0rtt=True`` raises ``FeatureNotAvailable``."""
        from .config import Http3Config

        config = Http3Config() if config is None else config
        if not isinstance(config, Http3Config):
            raise TypeError(f"enable_http3() takes an Http3Config, not {type(config).__name__}")
        if config.enable_0rtt:
            raise FeatureNotAvailable(
                "Http3Config(enable_0rtt=True): HTTP/3 0-RTT",
                issue=12,
                hint="0-RTT data is replayable; leave enable_0rtt False",
            )
        config._validate()
        self._http3 = config

    def enable_body_limit(self, max_body_size: int) -> None:
        self._limits.max_body_size = int(max_body_size)

    def server_config(self, host: str = "127.0.0.1", port: int = 8000, debug: bool = False) -> dict[str, Any]:
        """The data-plane configuration (``cello_config::ServerConfig``) as a dict."""
        _refuse_push(self._http2.enable_push)  # also when set on the object after set_http2()
        return {
            "host": host,
            "port": int(port),
            "debug": bool(debug),
            "limits": self._limits._to_config(),
            "timeouts": self._timeouts._to_config(),
            "threadpool": self._threadpool._to_config(),
            "http2": self._http2._to_config(),
            **({"websocket": self._websocket._to_config()} if self._websocket is not None else {}),
            "trustedProxies": list(self._trusted_proxies),
            **self._observability_config(),
            **self._edge_config(),
            **self._cache_config(),
            **({"tls": self._tls._to_config()} if getattr(self, "_tls", None) is not None else {}),
            **({"http3": self._http3._to_config()} if getattr(self, "_http3", None) is not None else {}),
            **self._security_config(self._flatten()),
        }

    # ---- observability ------------------------------------------------------------------
    def enable_prometheus(self, endpoint: str = "/metrics", namespace: str = "cello", subsystem: str = "http") -> None:
        """Serve Prometheus metrics at ``endpoint`` (answered in Rust, before routing). Cello's own
        metrics are named ``{namespace}_{subsystem}_...`` (``{namespace}_workers`` and
        ``{namespace}_worker_restarts_total`` for the process metrics)."""
        from json import dumps

        from ._cello import validate_config

        cfg = {"enabled": True, "endpoint": str(endpoint), "namespace": str(namespace), "subsystem": str(subsystem)}
        validate_config(dumps({"prometheus": cfg}))
        self._prometheus = cfg

    def enable_telemetry(
        self, config: Any = None, *, protocol: str | None = None, propagate_response: bool = False
    ) -> None:
        """Trace every request with OpenTelemetry (``OpenTelemetryConfig``; unset fields come from
        the standard ``OTEL_*`` variables). ``protocol`` is ``"grpc"`` or ``"http/protobuf"``;
        ``propagate_response`` adds the server span's ``traceparent`` to responses."""
        from json import dumps

        from ._cello import validate_config

        fields = config.to_dict() if config is not None else {}
        if fields.get("export_metrics") and "export_metrics" in getattr(config, "_explicit", ()):
            raise FeatureNotAvailable(
                "OpenTelemetryConfig(export_metrics=True): OTLP metrics export",
                issue=8,
                hint="Cello's metrics are served in Prometheus format by app.enable_prometheus(); "
                "leave export_metrics unset or pass False",
            )
        cfg: dict[str, Any] = {"enabled": True, "propagateResponse": bool(propagate_response)}
        for key in ("service_name", "service_version", "otlp_endpoint", "sampling_rate", "excluded_paths"):
            if fields.get(key) is not None:
                cfg[key] = fields[key]
        if "export_traces" in fields:
            cfg["exportTraces"] = bool(fields["export_traces"])
        if protocol is not None:
            cfg["protocol"] = protocol
        validate_config(dumps({"telemetry": cfg}))
        self._telemetry = cfg

    def enable_health_checks(self, config: Any = None, *, drain_delay_secs: float = 0.0) -> None:
        """Serve ``/health/live``, ``/health/ready`` and ``/health/startup`` (``HealthCheckConfig``
        sets the base path, details, timeouts and caching). ``drain_delay_secs``: after SIGTERM,
        keep accepting that long while ``/ready`` answers 503."""
        from json import dumps

        from ._cello import validate_config

        fields = config.to_dict() if config is not None else {}
        cfg: dict[str, Any] = {"enabled": True, "drainDelaySecs": float(drain_delay_secs)}
        for key in ("base_path", "include_details", "include_system_info", "version", "timeout_secs", "cache_secs"):
            if fields.get(key) is not None:
                cfg[key] = fields[key]
        validate_config(dumps({"health": cfg}))
        self._health = cfg

    def health_check(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a readiness check (sync or async, no arguments): return True/None when healthy,
        False or raise when not, or ``(ok, detail)``."""

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            checks = self.__dict__.setdefault("_health_checks", {})
            checks[str(name)] = fn
            return fn

        return decorator

    def _observability_config(self) -> dict[str, Any]:

        out: dict[str, Any] = {}
        if getattr(self, "_prometheus", None):
            out["prometheus"] = dict(self._prometheus)
        if getattr(self, "_telemetry", None):
            out["telemetry"] = dict(self._telemetry)
        health = getattr(self, "_health", None)
        env = (_env.lookup("CELLO_HEALTH_CHECKS") or "").strip().lower()
        if env in ("1", "true", "yes", "on") and not health:
            health = {"enabled": True}
        if health and env not in ("0", "false", "no", "off"):
            out["health"] = dict(health)
        return out

    # ---- hooks, errors, DI registry -----------------------------------------------------
    def on_event(self, event: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        if event not in self._events:
            raise ValueError(f"unknown event {event!r}: use 'startup' or 'shutdown'")

        def decorator(fn: Callable[[], Any]) -> Callable[[], Any]:
            self._events[event].append(fn)
            return fn

        return decorator

    async def _run_event(self, event: str) -> None:
        if event == "shutdown":
            from .background import drain

            await drain(self)  # background tasks and dependency teardowns still pending
        if event == "startup" and self._lifespan is not None:
            self._lifespan_cm = self._lifespan(self)
            value = await self._lifespan_cm.__aenter__()
            if isinstance(value, dict):
                # Starlette's lifespan state: what the context manager yields lands in app.state.
                vars(self.state).update(value)
        for fn in self._events[event]:
            result = fn()
            if inspect.isawaitable(result):
                await result
        if event == "shutdown" and self._lifespan_cm is not None:
            cm, self._lifespan_cm = self._lifespan_cm, None
            await cm.__aexit__(None, None, None)

    def exception_handler(self, exc_type: type[BaseException]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """``handler(request, exc)`` answers for ``exc_type`` (and subclasses)."""

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._exception_handlers[exc_type] = fn
            return fn

        return decorator

    def _exception_handler_for(self, exc: BaseException) -> Callable[..., Any] | None:
        for cls in type(exc).__mro__:
            handler = self._exception_handlers.get(cls)
            if handler is not None:
                return handler
        return None

    def _plain_response(self, result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        """Turn an exception handler's result into (status, headers, body)."""
        from .problems import ProblemDetails
        from .responses import Response

        status = None
        headers: Any = None
        if isinstance(result, ProblemDetails):
            result = result.to_response()
        if isinstance(result, tuple):
            result, status, *rest = result
            headers = rest[0] if rest else None
        if not isinstance(result, Response):
            result = Response.json(result) if not isinstance(result, (bytes, bytearray)) else Response.binary(result)
        code, hdrs, kind, payload = result._cello_parts()
        if kind != 0:
            raise TypeError("an exception handler must return a plain (non-streaming) response")
        hdrs = list(hdrs)
        if headers:
            hdrs.extend(headers.items() if isinstance(headers, dict) else headers)
        return int(status or code), hdrs, bytes(payload or b"")

    # ---- developer API -------------------------------------------------------------------
    def enable_openapi(
        self,
        title: str = "Cello API",
        version: str = "0.1.0",
        description: str | None = None,
        servers: list[Any] | None = None,
        *,
        openapi_url: str = "/openapi.json",
        docs_url: str | None = "/docs",
        redoc_url: str | None = "/redoc",
    ) -> None:
        """Serve the OpenAPI 3.1 document at ``openapi_url``, Swagger UI at ``docs_url`` and
        ReDoc at ``redoc_url`` (assets served by the app itself, no CDN)."""
        from . import openapi

        openapi.install(self, title=title, version=version, description=description, servers=servers,
                        openapi_url=openapi_url, docs_url=docs_url, redoc_url=redoc_url)  # fmt: skip

    def enable_graphql(self, config: Any = None, schema: Any = None, *, subscriptions_path: str | None = None) -> Any:
        """Serve GraphQL at ``config.path`` (POST and GET, GraphQL over HTTP), GraphiQL there
        for browsers when ``playground``, and subscriptions over WebSocket at
        ``path`` itself (and ``<path>/ws``), or at ``subscriptions_path`` only. ``schema``: a ``GraphQL`` or ``Schema``;
        ``None`` takes the ``@Query``/``@Mutation``/``@Subscription`` functions of the process.
        Returns the ``GraphQL``."""
        from .graphql import _http

        return _http.install(self, config, schema, subscriptions_path)

    def enable_grpc(self, config: Any = None) -> Any:
        """Serve gRPC on ``config.address`` (a ``GrpcConfig``; ``None``: the defaults) in every
        worker, handlers on the worker's loop; returns the ``GrpcServer``. See docs/grpc.md."""
        from .grpc._app import enable_grpc

        return enable_grpc(self, config)

    def add_grpc_service(self, service: Any, proto: Any = None) -> None:
        """Add a ``GrpcService`` instance (messages from the ``proto`` file, else JSON), or the
        published form ``add_grpc_service("pkg.Service", {"Method": handler})``."""
        from .grpc._app import add_grpc_service

        add_grpc_service(self, service, proto)

    def enable_templates(
        self,
        template_dir: str = "templates",
        auto_escape: bool = True,
        globals: dict[str, Any] | None = None,
        *,
        reload: bool | None = None,
    ) -> Any:
        """Jinja2-syntax templates (minijinja, in Rust) from ``template_dir``; ``url_for`` and
        ``csrf_token()`` are globals. ``reload=None`` re-reads templates on every render while the
        app runs in debug (development) mode. Returns the ``MiniJinjaEngine``."""
        from . import templating

        self._templates = templating.enable(self, template_dir, auto_escape, globals, reload)
        return self._templates

    def _template_engine(self) -> Any:
        engine = getattr(self, "_templates", None)
        if engine is None:
            raise RuntimeError("templates are not enabled: call app.enable_templates() first")
        return engine

    def render(self, name: str, context: dict[str, Any] | None = None) -> str:
        """Render template ``name`` with ``context``; returns the text."""
        return self._template_engine().render(name, context)

    def render_string(self, source: str, context: dict[str, Any] | None = None) -> str:
        """Render a template given as a string (HTML-escaped unless ``auto_escape=False``)."""
        return self._template_engine().render_string(source, context)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document (with ``enable_openapi``'s title/version, or the defaults)."""
        from . import openapi

        return openapi.build(self, **(getattr(self, "_openapi_options", None) or {}))

    def enable_database(self, config: Any = None) -> Any:
        """A SQL pool as ``app.database`` and the singleton ``database`` (``None``: SQLite
        ``sqlite://cello.db`` in the working directory)."""
        from .database import enable_database

        return enable_database(self, config)

    def enable_redis(self, config: Any = None) -> Any:
        """Redis as ``app.redis``, ``request.redis`` and the singleton ``redis``."""
        from .database import enable_redis

        return enable_redis(self, config)

    def enable_event_sourcing(self, config: Any = None, **kwargs: Any) -> Any:
        """An ``EventStore`` as ``app.event_store`` (the app's database, else memory)."""
        from .eventsourcing import enable_event_sourcing

        return enable_event_sourcing(self, config, **kwargs)

    def enable_cqrs(self, config: Any = None) -> App:
        """``app.command_bus`` / ``app.query_bus``, injectable as ``Depends("command_bus")``."""
        from .cqrs import enable_cqrs

        return enable_cqrs(self, config)

    def enable_sagas(self, config: Any = None, **kwargs: Any) -> Any:
        """A ``SagaOrchestrator`` as ``app.sagas``, persisted in the app's database."""
        from .saga import enable_sagas

        return enable_sagas(self, config, **kwargs)

    # ---- messaging beside HTTP ---------------------------------------------------------
    def enable_messaging(
        self,
        config: Any = None,
        *,
        consumers: Any = None,
        startup_timeout: float = 10.0,
        metrics_interval_secs: float = 10.0,
    ) -> None:
        """Run message consumers in every HTTP worker, on its event loop beside the routes: those
        declared in the calling module (or ``consumers``: handlers or modules). ``config`` (a
        ``RedisConfig``, ``RabbitMQConfig``, ``KafkaConfig`` or ``SqsConfig``) is the broker of the
        consumers of its kind whose decorator names none. Connected at startup (a broker still
        unreachable after ``startup_timeout`` seconds fails it), drained on SIGTERM, check
        ``messaging`` in ``/health/ready``, ``cello_messaging_*`` in ``/metrics`` (the consumer lag
        and queue depth gauges read from the broker every ``metrics_interval_secs``)."""
        from ._messaging_app import enable

        enable(
            self,
            config,
            ("redis", "rabbitmq", "kafka", "sqs"),
            "enable_messaging",
            startup_timeout,
            consumers,
            metrics_interval_secs,
        )

    def enable_rabbitmq(
        self,
        config: Any = None,
        *,
        consumers: Any = None,
        startup_timeout: float = 10.0,
        metrics_interval_secs: float = 10.0,
    ) -> None:
        """``enable_messaging`` with a ``RabbitMQConfig``."""
        from ._messaging_app import enable

        enable(self, config, ("rabbitmq",), "enable_rabbitmq", startup_timeout, consumers, metrics_interval_secs)

    def enable_sqs(
        self,
        config: Any = None,
        *,
        consumers: Any = None,
        startup_timeout: float = 10.0,
        metrics_interval_secs: float = 10.0,
    ) -> None:
        """``enable_messaging`` with an ``SqsConfig``."""
        from ._messaging_app import enable

        enable(self, config, ("sqs",), "enable_sqs", startup_timeout, consumers, metrics_interval_secs)

    def register_singleton(self, name: str, value: Any) -> None:
        self._singletons[name] = value

    def url_for(self, name: str, **params: Any) -> str:
        for r in self._flatten():
            if r.name == name:
                names = _PARAM.findall(r.path)
                missing = [p for p in names if p not in params]
                if missing:
                    raise ValueError(f"url_for({name!r}) needs {', '.join(missing)}")
                from urllib.parse import quote, urlencode

                # Path values are percent-encoded (a ``{rest:path}`` keeps its slashes); the
                # other keyword arguments become the query string, as in Flask.
                path = _PARAM.sub(
                    lambda m: quote(str(params[m.group(1)]), safe="/" if ":path" in m.group(0) else ""), r.path
                )
                extra = {k: v for k, v in params.items() if k not in names}
                return f"{path}?{urlencode(extra, doseq=True)}" if extra else path
        raise LookupError(f"no route named {name!r}")

    # ---- compile and run ---------------------------------------------------------------
    def _compile(self) -> tuple[list[tuple[list[str], str, bool]], list[Callable[..., Any]]]:
        routes, endpoints = [], []
        for r in self._flatten(guards=self._pre_guards):
            if r.websocket:
                from .di import compile_websocket

                routes.append((r.methods, r.path, False))
                endpoints.append(compile_websocket(self, r, _PARAM.findall(r.path)))
                continue
            blocking = r.blocking and not inspect.iscoroutinefunction(r.handler)
            routes.append((r.methods, r.path, blocking))
            endpoints.append(compile_endpoint(self, r, _PARAM.findall(r.path)))
        if "redis" in self._singletons:
            from .database import attach_to_requests

            endpoints = attach_to_requests(self, endpoints)
        return routes, endpoints

    def run(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        debug: bool | None = None,
        env: str | None = None,
        workers: int | None = None,
        reload: bool = False,
        logs: bool | None = None,
    ) -> None:
        """Serve until stopped. Command-line flags (``--host --port ...``) override arguments."""
        opts = _cli.resolve_run_options(
            host=host, port=port, debug=debug, env=env, workers=workers, reload=reload, logs=logs, cluster=self._cluster
        )
        from ._supervisor import run_app

        code = run_app(self, opts)
        if code:
            raise SystemExit(code)

    def _serve(
        self,
        opts: _cli.RunOptions,
        on_ready: Callable[[tuple[str, int]], None] | None = None,
        on_beat: Callable[[], None] | None = None,
        on_executor: Callable[[Any], None] | None = None,
        listen_fd: int | None = None,
    ) -> None:
        """Serve in this process (one worker) until stopped; ``on_ready`` gets the bound address,
        ``on_beat`` is called on each heartbeat of the event loop. ``listen_fd`` is a listening
        socket to accept on (the supervisor's, for its slot; taken over) instead of binding one."""
        from ._runtime import Executor

        config = self.server_config(opts.host, opts.port, opts.debug)
        # enable_logging() turns the access log on whatever the command line says.
        config["accessLog"] = bool(opts.access_log) or bool(config.get("accessLog"))
        config["rootPath"] = opts.root_path or ""
        if opts.worker_timeout is not None:
            config["timeouts"] = {**config["timeouts"], "worker_timeout": float(opts.worker_timeout)}
        tls = _cli.tls_section(opts)
        if tls is not None:
            config["tls"] = tls
        config = _with_config_file(config, _env.lookup("CELLO_CONFIG"))
        per_ip = _env.get_int("CELLO_MAX_CONNECTIONS_PER_IP")
        if per_ip is not None:
            limits = {k: v for k, v in (config.get("limits") or {}).items() if k != "maxConnectionsPerIp"}
            config["limits"] = {**limits, "max_connections_per_ip": per_ip}
        _refuse_push(
            bool((config.get("http2") or {}).get("enablePush") or (config.get("http2") or {}).get("enable_push"))
        )
        executor = Executor(self, config, workers=opts.workers)
        if on_executor is not None:
            on_executor(executor)
        with self._lock:
            self._executor = executor
        try:
            executor.serve(drain_timeout=opts.shutdown_timeout, on_ready=on_ready, on_beat=on_beat,
                           listen_fd=listen_fd)  # fmt: skip
        finally:
            with self._lock:
                self._executor = None

    def stop(self) -> None:
        """Begin a graceful stop of a running ``run()`` (safe from any thread)."""
        with self._lock:
            if self._executor is not None:
                self._executor.stop()


__all__ = ["App", "Blueprint", "HTTPException"]
