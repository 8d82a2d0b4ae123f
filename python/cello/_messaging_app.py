"""Message consumers inside ``cello run``, beside HTTP: ``app.enable_messaging(config)``.

The consumers declared in the module that enables messaging (``@redis_consumer``,
``@rabbitmq_consumer``, ...) run in every HTTP worker, on the worker's asyncio loop next to
the request handlers:

- startup: each consumer connects (retrying until ``startup_timeout``); a broker still
  unreachable then fails the worker's startup (``cello run`` exits 3 with the reason);
- the config given to ``enable_messaging`` / ``enable_rabbitmq`` / ``enable_sqs`` is the broker
  of the consumers whose decorator named none (``url=`` / ``config=``), per broker kind;
- ``/health/ready`` (``enable_health_checks``) answers 503 while a consumer cannot fetch
  (check ``messaging``);
- ``/metrics`` (``enable_prometheus``) carries ``cello_messaging_*`` per system and destination;
- SIGTERM: fetching stops at once; handlers in flight finish (within the drain timeout) and
  are settled (ack, ...) before the worker exits; what did not finish is redelivered later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from typing import Any

from . import messaging as _m

log = logging.getLogger("cello.messaging")


class _Stats(_m._Stats):
    """The consumers' figures, in the app's ``/metrics`` (Rust, summed across workers)."""

    def inc(self, what: str, spec: _m.ConsumerSpec, n: int = 1) -> None:
        super().inc(what, spec, n)
        _m._native().messaging_metric(f"messaging_messages_{what}_total", spec.kind, spec.source, float(n))

    def observe(self, spec: _m.ConsumerSpec, seconds: float) -> None:
        super().observe(spec, seconds)
        native = _m._native()
        native.messaging_metric("messaging_process_duration_seconds_sum", spec.kind, spec.source, seconds)
        native.messaging_metric("messaging_process_duration_seconds_count", spec.kind, spec.source, 1.0)

    def gauge(self, what: str, spec: _m.ConsumerSpec, value: float) -> None:
        super().gauge(what, spec, value)
        _m._native().messaging_metric(f"messaging_{what}", spec.kind, spec.source, value)


class _Runner(_m._Runner):
    """A consumer in an HTTP worker."""

    @property
    def reports_backlog(self) -> bool:
        # /metrics adds gauges up over the workers: the lag of the partitions each worker
        # holds adds up to the group's, but a queue's depth is one figure — worker 0 says it.
        from . import _supervisor

        return self.spec.kind == "kafka" or _supervisor.WORKER_SLOT == 0


class AppMessaging:
    """What ``enable_messaging`` set up on an app: broker defaults and the running consumers."""

    def __init__(self, app: Any, sources: list[Any], startup_timeout: float) -> None:
        self.app = app
        self.sources = sources  # modules or handlers whose consumers run
        self.startup_timeout = startup_timeout
        self.metrics_interval = 10.0
        self.defaults: dict[str, Any] = {}
        self.runners: list[_Runner] = []
        self.tasks: list[asyncio.Task] = []
        self.stop_at: float | None = None
        self.failed: str | None = None

    # ---- configuration -----------------------------------------------------------------------

    def specs(self) -> list[_m.ConsumerSpec]:
        specs: list[_m.ConsumerSpec] = []
        for source in self.sources:
            obj = sys.modules.get(source) if isinstance(source, str) else source
            for s in _m.consumers_of(obj) if obj is not None else []:
                if s not in specs:
                    specs.append(s)
        if not specs:
            names = ", ".join(s if isinstance(s, str) else getattr(s, "__name__", repr(s)) for s in self.sources)
            raise RuntimeError(
                f"app.enable_messaging(): {names} declares no consumer "
                "(@redis_consumer, @rabbitmq_consumer, ...) to run beside HTTP"
            )
        return [self.with_default(s) for s in specs]

    def with_default(self, spec: _m.ConsumerSpec) -> _m.ConsumerSpec:
        config = self.defaults.get(spec.kind)
        if config is None or spec.url is not None:
            return spec
        changes: dict[str, Any] = {}
        if spec.kind == "redis":
            changes["url"] = _m._redis_url(config)
        elif spec.kind == "rabbitmq":
            changes["url"] = _m._amqp_url(config)
        elif spec.kind == "kafka":
            if config.brokers:
                changes["url"] = ",".join(config.brokers)
            if spec.group is None and config.group_id:
                changes["group"] = config.group_id
        elif spec.kind == "sqs":
            # The decorator's own settings win; the app's SqsConfig fills what it left unset.
            given = dict(spec.sqs or {})
            for key, value in _m._sqs_config_settings(config).items():
                if given.get(key) is None and key in ("region", "endpoint_url"):
                    given[key] = value
            changes["sqs"] = given
        timeout = getattr(config, "connection_timeout_secs", None)
        if timeout:
            changes["connection_timeout_secs"] = float(timeout)
        return dataclasses.replace(spec, **changes)

    # ---- lifecycle (the worker's startup/shutdown hooks and its stop signal) -----------------

    async def start(self) -> None:
        specs = self.specs()
        stats = _Stats()
        # Apart from `cello consume`'s names on the same host (a Redis list consumer takes over
        # the processing list of its name when it starts).
        name = _m._consumer_name() + "-http"
        self.runners = [_Runner(s, stats, name, self.metrics_interval) for s in specs]
        deadline = time.monotonic() + self.startup_timeout
        results = await asyncio.gather(*(r.connect(deadline) for r in self.runners), return_exceptions=True)
        for r, res in zip(self.runners, results, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, _m.BrokerUnavailable):
                    raise _m.BrokerUnavailable(
                        f"{r.spec.name} ({r.spec.kind} {r.spec.source!r}): broker unreachable for "
                        f"{self.startup_timeout:g} s: {res}"
                    ) from res
                raise res
        self.tasks = [asyncio.ensure_future(self._run(r)) for r in self.runners]
        log.info("consuming %s beside HTTP", ", ".join(f"{s.kind}:{s.source}" for s in specs))

    async def _run(self, runner: _Runner) -> None:
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by /health/ready and the log
            runner.healthy = False
            self.failed = f"{runner.spec.name}: {type(exc).__name__}: {exc}"
            log.exception("consumer %s stopped", runner.spec.name)

    def on_stop_signal(self) -> None:
        """SIGTERM (or ``app.stop()``): stop fetching now; in-flight handlers go on."""
        if self.stop_at is None:
            self.stop_at = time.monotonic()
        for r in self.runners:
            r.stopping = True

    async def stop(self) -> None:
        """The shutdown hook: let in-flight handlers finish and settle within what is left of
        the drain timeout, then leave the rest for redelivery."""
        self.on_stop_signal()
        if not self.tasks:
            return
        executor = getattr(self.app, "_executor", None)
        budget = float(getattr(executor, "drain_timeout", None) or 30.0)
        left = max(0.5, budget - (time.monotonic() - (self.stop_at or time.monotonic())) - 0.5)
        await asyncio.wait(self.tasks, timeout=min(2.0, left))  # the fetch under way returns within 1 s
        for t in self.tasks:
            if not t.done():
                t.cancel()
        left = max(0.1, budget - (time.monotonic() - (self.stop_at or time.monotonic())) - 0.5)
        unfinished = sum(await asyncio.gather(*(r.drain(left) for r in self.runners)))
        if unfinished:
            log.warning("%d message(s) still in their handlers at shutdown: left for redelivery", unfinished)
        # Send the acks still queued (Redis streams, SQS) and commit what finished (Kafka).
        await asyncio.gather(*(r.close() for r in self.runners))
        self.tasks = []

    async def check(self) -> tuple[bool, str | None]:
        """The ``messaging`` readiness check."""
        if self.failed:
            return False, self.failed
        down = [r.spec.name for r in self.runners if not r.healthy]
        if down:
            return False, "disconnected: " + ", ".join(down)
        return True, None


def enable(
    app: Any,
    config: Any,
    kinds: tuple[str, ...],
    method: str,
    startup_timeout: float,
    consumers: Any = None,
    metrics_interval: float = 10.0,
    depth: int = 2,
) -> None:
    """``app.enable_messaging`` and friends. ``consumers``: handlers or modules whose consumers
    run; by default those of the calling module (``depth`` frames up)."""
    if config is not None:
        kind = _m._kind_of(config)
        if kind not in kinds:
            raise TypeError(f"app.{method}() takes a {' or '.join(_CONFIG_NAMES[k] for k in kinds)}, "
                            f"not {type(config).__name__}")  # fmt: skip
    _m._check_positive("startup_timeout", startup_timeout, 0)
    _m._check_positive("metrics_interval_secs", metrics_interval, 0.01)
    state: AppMessaging | None = app.__dict__.get("_messaging")
    if consumers is None:
        sources = [sys._getframe(depth).f_globals.get("__name__")]
    else:
        sources = [consumers] if isinstance(consumers, str) or not isinstance(consumers, (list, tuple)) else consumers
    if state is None:
        state = AppMessaging(app, list(sources), float(startup_timeout))
        state.metrics_interval = float(metrics_interval)
        app._messaging = state
        app.on_event("startup")(state.start)
        app.on_event("shutdown")(state.stop)
        app.health_check("messaging")(state.check)
        app.__dict__.setdefault("_on_stop", []).append(state.on_stop_signal)
    else:
        state.startup_timeout = float(startup_timeout)
        state.metrics_interval = float(metrics_interval)
        state.sources.extend(s for s in sources if s not in state.sources)
    if config is not None:
        state.defaults[_m._kind_of(config)] = config


_CONFIG_NAMES = {"kafka": "KafkaConfig", "redis": "RedisConfig", "rabbitmq": "RabbitMQConfig", "sqs": "SqsConfig"}
