"""``cello.messaging``: consumers and producers for message brokers — built by issue 15.

The broker clients are Rust (crate ``cello-messaging``); handlers run here, on the worker's
asyncio loop (``def`` handlers in a thread). Built today: **Redis** streams (consumer groups)
and lists (a reliable queue), **RabbitMQ** (prefetch, publisher confirms, a dead-letter
exchange), **Kafka** (consumer groups, ordering per partition, offsets committed after the
handler, a dead-letter topic, ``acks=all``) and **Amazon SQS** (long polling, visibility
extended while a handler runs, a dead-letter queue).

Delivery is at-least-once: a message is acknowledged only after its handler finished. What
the handler returns decides its fate (an exception counts as ``NACK``):

=============  =================================================================================
ACK / None     done: acknowledged
NACK           failed: retried in this worker after ``retry_backoff_secs`` (doubling) until it
               failed ``max_retries + 1`` times, then sent to the dead-letter destination with
               the error in its headers (``x-error``, ``x-delivery-count``, ...). SQS: made
               visible again after the backoff, so SQS delivers it again and counts it
REQUEUE        given back to the broker for a later delivery (stream: claimed again after
               ``claim_idle_secs``; list: pushed back to the consuming end; RabbitMQ: requeued;
               SQS: visible again at once; Kafka: published again at the end of its topic)
REJECT         dropped (RabbitMQ: rejected, so its dead-letter exchange gets it without an error;
               SQS: deleted)
DEAD_LETTER    straight to the dead-letter destination
=============  =================================================================================

``message.ack()`` / ``message.nack(requeue=True)`` inside the handler decide the same way
(``nack(requeue=False)`` is ``REJECT``), applied when the handler returns.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import json as _json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import _messaging_trace as _trace
from . import bindings as _bindings
from ._unavailable import FeatureNotAvailable

log = logging.getLogger("cello.messaging")


class MessageResult(enum.Enum):
    """What a consumer handler answers for a message."""

    ACK = "ack"
    NACK = "nack"
    REJECT = "reject"
    REQUEUE = "requeue"
    DEAD_LETTER = "dead_letter"


class MessagingError(Exception):
    """A broker refused a command."""


class BrokerUnavailable(MessagingError):
    """The broker cannot be reached."""


class BatchSendError(MessagingError):
    """Some messages of ``Producer.send_batch`` were not sent; the others were (and confirmed).

    ``results`` has one entry per message, in order: its id, or the exception it failed with;
    ``failed`` maps the index of each failed message to its exception."""

    def __init__(self, results: list[Any], destinations: list[str]) -> None:
        self.results = results
        self.failed: dict[int, BaseException] = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
        shown = [f"#{i} to {destinations[i]}: {exc}" for i, exc in list(self.failed.items())[:5]]
        more = f"; and {len(self.failed) - len(shown)} more" if len(self.failed) > len(shown) else ""
        super().__init__(
            f"send_batch: {len(self.failed)} of {len(results)} messages were not sent — " + "; ".join(shown) + more
        )


def _make_error(kind: str, message: str) -> Exception:
    """Called by the Rust side to build its exceptions."""
    return {"BrokerUnavailable": BrokerUnavailable}.get(kind, MessagingError)(message)


def _batch_failure(kind: str, message: str) -> Exception:
    """One message's failure in a batch (``kind`` as the Rust side names it)."""
    return ValueError(message) if kind == "ValueError" else _make_error(kind, message)


def _batch_item(m: Any) -> tuple[str, Any, str | None, dict | None]:
    """A ``send_batch`` item as ``(topic, value, key, headers)``."""
    if isinstance(m, dict):
        unknown = set(m) - {"topic", "value", "key", "headers"}
        if unknown or "topic" not in m or "value" not in m:
            raise TypeError(f"a send_batch item has topic, value and optionally key and headers: {m!r}")
        return m["topic"], m["value"], m.get("key"), m.get("headers")
    item = tuple(m)
    if not 2 <= len(item) <= 4:
        raise TypeError(f"a send_batch item is (topic, value[, key[, headers]]): {m!r}")
    return (*item, None, None)[:4]  # type: ignore[return-value]


def _executor() -> Any:
    from .database import _executor as ex

    return ex()


def _native() -> Any:
    from . import _cello

    return _cello


# ---- messages ------------------------------------------------------------------------------------


class Message:
    """One received message. ``ack()`` / ``nack()`` decide its fate when the handler returns."""

    __slots__ = ("id", "body", "headers", "key", "source", "partition", "offset", "delivery_count", "_decision")

    def __init__(self, raw: tuple) -> None:
        mid, body, headers, key, source, partition, offset, count = raw
        self.id: str = mid
        self.body: bytes = body
        self.headers: dict[str, str] = dict(headers)
        self.key: str | None = key
        self.source: str = source
        self.partition: int | None = partition
        self.offset: int | None = offset
        self.delivery_count: int = count
        self._decision: MessageResult | None = None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.body)

    @property
    def topic(self) -> str:
        return self.source

    @property
    def queue(self) -> str:
        return self.source

    def ack(self) -> None:
        self._decision = MessageResult.ACK

    def nack(self, requeue: bool = True) -> None:
        self._decision = MessageResult.REQUEUE if requeue else MessageResult.REJECT

    def __repr__(self) -> str:
        return f"Message(source={self.source!r}, id={self.id!r}, delivery_count={self.delivery_count})"


# ---- consumer declarations -------------------------------------------------------------------------


@dataclass
class ConsumerSpec:
    """What a consumer decorator declared."""

    handler: Callable
    kind: str  # "redis" (built), "rabbitmq", "kafka", "sqs"
    source: str  # stream, list, queue or topic
    group: str | None = None
    mode: str = "stream"  # redis: "stream" or "list"
    url: str | None = None
    sqs: dict | None = None  # sqs: region, endpoint_url, credentials, visibility and wait times
    concurrency: int = 10
    batch_size: int = 10
    max_retries: int = 3
    retry_backoff_secs: float = 0.5
    dead_letter: str | None = None
    claim_idle_secs: float = 30.0
    connection_timeout_secs: float = 5.0
    prefetch: int = 10
    declare: bool = True
    auto_commit: bool = True  # kafka: commit settled offsets every second (else at once)
    client_id: str | None = None  # kafka
    session_timeout_ms: int = 30000  # kafka

    @property
    def name(self) -> str:
        fn = self.handler
        return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"

    def dead_letter_name(self) -> str:
        if self.dead_letter:
            return self.dead_letter
        if self.kind == "kafka":
            return f"{self.source}.dlq"
        return f"{self.source}.dead" if self.kind == "rabbitmq" else f"{self.source}:dead"


_DECLARED: list[ConsumerSpec] = []


def _check_positive(name: str, value: Any, minimum: float = 1) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}")


def _declare(spec: ConsumerSpec) -> Callable:
    _check_positive("concurrency", spec.concurrency)
    _check_positive("batch_size", spec.batch_size)
    _check_positive("max_retries", spec.max_retries, 0)
    _check_positive("retry_backoff_secs", spec.retry_backoff_secs, 0)
    if not callable(spec.handler):
        raise TypeError("a consumer decorates a function")
    spec.handler.__cello_consumer__ = spec
    _DECLARED.append(spec)
    return spec.handler


def redis_consumer(
    stream_or_list: str,
    group: str | None = None,
    *,
    mode: str | None = None,
    url: str | None = None,
    config: Any = None,
    concurrency: int = 10,
    batch_size: int = 10,
    max_retries: int = 3,
    retry_backoff_secs: float = 0.5,
    dead_letter: str | None = None,
    claim_idle_secs: float = 30.0,
) -> Callable[[Callable], Callable]:
    """Consume a Redis stream with consumer group ``group`` (``mode="stream"``, the default when
    ``group`` is given) or a Redis list as a reliable queue (``mode="list"``, the default
    without ``group``; producers ``LPUSH``). ``url`` (or ``config``, a ``RedisConfig``) names
    the server; unset, the ``--queue`` binding of ``cello consume`` or ``RedisConfig.local()``
    does. Dead letters go to the stream/list ``dead_letter`` (default ``<name>:dead``)."""
    chosen = mode or ("stream" if group else "list")
    if chosen not in ("stream", "list"):
        raise ValueError(f"redis_consumer mode must be 'stream' or 'list', got {mode!r}")
    if config is not None and url is None:
        url = _redis_url(config)

    def decorate(fn: Callable) -> Callable:
        return _declare(
            ConsumerSpec(
                handler=fn,
                kind="redis",
                source=stream_or_list,
                group=group,
                mode=chosen,
                url=url,
                concurrency=concurrency,
                batch_size=batch_size,
                max_retries=max_retries,
                retry_backoff_secs=retry_backoff_secs,
                dead_letter=dead_letter,
                claim_idle_secs=claim_idle_secs,
                connection_timeout_secs=getattr(config, "connection_timeout_secs", 5.0) if config else 5.0,
            )
        )

    return decorate


def rabbitmq_consumer(
    queue: str,
    prefetch: int | None = None,
    *,
    url: str | None = None,
    config: Any = None,
    concurrency: int | None = None,
    max_retries: int = 3,
    retry_backoff_secs: float = 0.5,
    dead_letter: str | None = None,
    declare: bool = True,
) -> Callable[[Callable], Callable]:
    """Consume a RabbitMQ queue with at most ``prefetch`` unacknowledged deliveries (default
    ``RabbitMQConfig.prefetch_count``, 10); ``concurrency`` defaults to ``prefetch``. The queue
    is declared durable with the dead-letter exchange ``dead_letter`` (default
    ``<queue>.dead``, a fanout exchange with a queue of the same name bound) unless
    ``declare=False``. ``url`` or ``config`` (a ``RabbitMQConfig``) names the broker; unset,
    the ``--queue`` binding of ``cello consume`` or ``RabbitMQConfig.local()`` does."""
    from .config import RabbitMQConfig

    cfg = config if config is not None else RabbitMQConfig.local()
    if url is None and (config is not None):
        url = _amqp_url(config)
    fetch = prefetch if prefetch is not None else cfg.prefetch_count
    _check_positive("prefetch", fetch)
    if fetch > 65535:
        raise ValueError(f"prefetch must be at most 65535, got {fetch}")

    def decorate(fn: Callable) -> Callable:
        return _declare(
            ConsumerSpec(
                handler=fn,
                kind="rabbitmq",
                source=queue,
                url=url,
                concurrency=concurrency if concurrency is not None else fetch,
                batch_size=fetch,
                max_retries=max_retries,
                retry_backoff_secs=retry_backoff_secs,
                dead_letter=dead_letter,
                connection_timeout_secs=cfg.connection_timeout_secs,
                prefetch=fetch,
                declare=declare,
            )
        )

    return decorate


def sqs_consumer(
    queue_url: str,
    *,
    config: Any = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    concurrency: int = 10,
    batch_size: int | None = None,
    visibility_timeout_secs: int | None = None,
    wait_time_secs: int | None = None,
    max_retries: int = 3,
    retry_backoff_secs: float = 0.5,
    dead_letter: str | None = None,
    declare: bool = True,
) -> Callable[[Callable], Callable]:
    """Consume the SQS queue ``queue_url``: long polls of up to ``wait_time_secs`` (at most 1 s
    under ``cello consume``, so SIGTERM is answered quickly; 0 polls short) for up to
    ``batch_size`` messages (at most 10, default ``SqsConfig.max_messages``), each received
    with ``visibility_timeout_secs`` (default 30) that is extended while its handler runs, and
    deleted once the handler finished. A failed message (NACK) is made visible again after
    ``retry_backoff_secs`` (doubling, whole seconds) and SQS delivers it again
    (``delivery_count`` is its ``ApproximateReceiveCount``); after ``max_retries`` retries it
    is sent to the dead-letter queue with the error in its message attributes and deleted.
    The dead-letter queue is ``dead_letter`` (a URL or a queue name), else the target of the
    queue's redrive policy, else ``<queue>-dead``, created unless ``declare=False``.

    ``region`` and ``endpoint_url`` (a local stack) or ``config`` (an ``SqsConfig``) name the
    service; unset, the ``--queue`` binding of ``cello consume`` does, then ``AWS_REGION`` /
    ``AWS_ENDPOINT_URL_SQS``. Credentials: the binding's ``ACCESS_KEY_ID`` /
    ``SECRET_ACCESS_KEY``, else the first source that has some: ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, IRSA (``AWS_WEB_IDENTITY_TOKEN_FILE``
    and ``AWS_ROLE_ARN``), EKS Pod Identity (``AWS_CONTAINER_CREDENTIALS_FULL_URI``); none is
    a start-up error."""
    from .config import SqsConfig

    cfg = config if config is not None else SqsConfig()
    explicit = getattr(cfg, "_explicit", set()) if config is not None else set()
    url = queue_url or cfg.queue_url
    if not url:
        raise ValueError("sqs_consumer needs a queue URL")
    fetch = batch_size if batch_size is not None else cfg.max_messages
    _check_positive("batch_size", fetch)
    if fetch > 10:
        raise ValueError(f"SQS returns at most 10 messages per receive: batch_size {fetch}")
    visibility = visibility_timeout_secs if visibility_timeout_secs is not None else cfg.visibility_timeout_secs
    _check_positive("visibility_timeout_secs", visibility)
    wait = wait_time_secs if wait_time_secs is not None else cfg.wait_time_secs
    _check_positive("wait_time_secs", wait, 0)
    settings = {
        "region": region or (cfg.region if "region" in explicit else None),
        "endpoint_url": endpoint_url or cfg.endpoint_url,
        "visibility_timeout_secs": float(visibility),
        "wait_time_secs": float(min(wait, 20)),
    }

    def decorate(fn: Callable) -> Callable:
        return _declare(
            ConsumerSpec(
                handler=fn,
                kind="sqs",
                source=url,
                sqs=settings,
                concurrency=concurrency,
                batch_size=fetch,
                max_retries=max_retries,
                retry_backoff_secs=retry_backoff_secs,
                dead_letter=dead_letter,
                declare=declare,
            )
        )

    return decorate


def kafka_consumer(
    topic: str,
    group: str | None = None,
    auto_commit: bool = True,
    *,
    brokers: str | Iterable[str] | None = None,
    config: Any = None,
    concurrency: int = 10,
    batch_size: int | None = None,
    max_retries: int = 3,
    retry_backoff_secs: float = 0.5,
    dead_letter: str | None = None,
) -> Callable[[Callable], Callable]:
    """Consume Kafka ``topic`` as a member of consumer group ``group`` (default: the config's
    ``group_id``, the binding's ``GROUP``, else the topic name). Messages of one partition are
    handled one after the other, in offset order; up to ``concurrency`` partitions at once.
    An offset is committed only once its message and every one before it in the partition
    were settled: every second with ``auto_commit`` (and on revoke and shutdown), at once
    without it. Dead letters go to the topic ``dead_letter`` (default ``<topic>.dlq``).
    ``brokers`` or ``config`` (a ``KafkaConfig``) names the cluster; unset, the ``--queue``
    binding of ``cello consume``, the ``CELLO_QUEUE_*`` binding of this topic, or
    ``KafkaConfig.local()`` does."""
    from .config import KafkaConfig

    cfg = config if config is not None else KafkaConfig()
    if brokers is None and cfg.brokers:
        brokers = cfg.brokers
    if brokers is not None and not isinstance(brokers, str):
        brokers = ",".join(brokers)
    fetch = batch_size if batch_size is not None else min(cfg.max_poll_records, 100)
    _check_positive("batch_size", fetch)

    def decorate(fn: Callable) -> Callable:
        return _declare(
            ConsumerSpec(
                handler=fn,
                kind="kafka",
                source=topic,
                group=group or cfg.group_id,
                url=brokers,
                concurrency=concurrency,
                batch_size=fetch,
                max_retries=max_retries,
                retry_backoff_secs=retry_backoff_secs,
                dead_letter=dead_letter,
                auto_commit=bool(auto_commit and cfg.auto_commit),
                client_id=cfg.client_id,
                session_timeout_ms=cfg.session_timeout_ms,
            )
        )

    return decorate


def _sqs_binding() -> _bindings.QueueBinding | None:
    """The one SQS binding of ``CELLO_QUEUES``, if there is exactly one."""
    found = [b for b in _bindings.queue_bindings().values() if b.kind == "sqs"]
    return found[0] if len(found) == 1 else None


def _sqs_connection(settings: dict, binding: _bindings.QueueBinding | None = None) -> tuple:
    """``(region, endpoint_url, access_key_id, secret_access_key, session_token)``: the
    settings given, else the binding's, else the standard AWS variables. Keys only from the
    binding (its Secret); without them the Rust client's credential chain finds them:
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, IRSA, EKS Pod Identity."""
    b = binding.settings if binding is not None else {}
    env = os.environ

    def first(*values: str | None) -> str | None:
        return next((v for v in values if v), None)

    region = first(settings.get("region"), b.get("region"), env.get("AWS_REGION"), env.get("AWS_DEFAULT_REGION"))
    endpoint = first(settings.get("endpoint_url"), b.get("endpoint"), env.get("AWS_ENDPOINT_URL_SQS"),
                     env.get("AWS_ENDPOINT_URL"))  # fmt: skip
    if bool(b.get("access_key_id")) != bool(b.get("secret_access_key")):
        raise ValueError(f"queue binding {binding.name!r}: ACCESS_KEY_ID and SECRET_ACCESS_KEY go together")
    keys = (b.get("access_key_id") or "", b.get("secret_access_key") or "", None)
    return (region or "us-east-1", endpoint, *keys)


def _sqs_config_settings(config: Any) -> dict:
    """An ``SqsConfig``'s fields that were set, as ``_sqs_connection`` reads them."""
    explicit = getattr(config, "_explicit", set())
    return {
        "region": config.region if "region" in explicit else None,
        "endpoint_url": config.endpoint_url,
        "visibility_timeout_secs": float(config.visibility_timeout_secs),
        "wait_time_secs": float(min(config.wait_time_secs, 20)),
    }


def _kafka_binding(topic: str | None = None) -> _bindings.QueueBinding | None:
    """The operator's Kafka binding for ``topic`` (or the only Kafka binding), if any."""
    found = [b for b in _bindings.queue_bindings().values() if b.kind == "kafka"]
    for b in found:
        if topic is not None and b.topic == topic:
            return b
    return found[0] if len(found) == 1 else None


def _kafka_brokers(brokers: str | Iterable[str] | None, topic: str | None = None) -> str:
    """Bootstrap servers: as given, else the binding's, else ``KafkaConfig.local()``'s."""
    if brokers:
        return brokers if isinstance(brokers, str) else ",".join(brokers)
    binding = _kafka_binding(topic)
    if binding is not None and binding.bootstrap_servers:
        _no_kafka_password(binding)
        return binding.bootstrap_servers
    from .config import KafkaConfig

    return ",".join(KafkaConfig.local().brokers)


def _no_kafka_password(binding: _bindings.QueueBinding) -> None:
    if binding.password:
        raise MessagingError(
            f"queue binding {binding.name!r}: Kafka SASL (PASSWORD) is not supported yet; "
            "use a listener without authentication"
        )


def kafka_producer(topic: str, *, config: Any = None, brokers: str | Iterable[str] | None = None) -> Callable:
    """Publish what the decorated function returns to Kafka ``topic`` (``None`` publishes
    nothing); the call returns the value once the brokers acknowledged it. ``bytes``/``str`` go
    as they are, anything else as JSON. The producer connects on first use (``brokers``,
    ``config``, the topic's binding or ``KafkaConfig.local()``)."""
    if config is not None and brokers is None:
        brokers = config.brokers or None
    client_id = getattr(config, "client_id", None)

    def decorate(fn: Callable) -> Callable:
        is_async = inspect.iscoroutinefunction(fn)

        async def publish(value: Any) -> Any:
            if value is not None:
                producer = await _kafka_shared_producer(_kafka_brokers(brokers, topic), client_id)
                await producer.send(topic, value)
            return value

        if is_async:

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await publish(await fn(*args, **kwargs))

        else:

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                value = fn(*args, **kwargs)
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    return asyncio.run(publish(value))
                raise MessagingError(
                    f"{fn.__qualname__} is a sync @kafka_producer called inside an event loop: make it async"
                )

        wrapper.__cello_producer__ = topic
        return wrapper

    return decorate


_KAFKA_PRODUCERS: dict[tuple[Any, str, str | None], Any] = {}


async def _kafka_shared_producer(brokers: str, client_id: str | None) -> Producer:
    """One producer per loop and cluster (a producer is bound to the loop that made it)."""
    key = (asyncio.get_running_loop(), brokers, client_id)
    producer = _KAFKA_PRODUCERS.get(key)
    if producer is None:
        from .config import KafkaConfig

        producer = await Producer.connect(KafkaConfig(brokers=brokers, client_id=client_id))
        _KAFKA_PRODUCERS[key] = producer
    return producer


def _amqp_url(config: Any) -> str:
    """A ``RabbitMQConfig`` as one AMQP URI: its vhost (unless the URL names one) and heartbeat."""
    from urllib.parse import quote, urlsplit

    url = config.url
    parts = urlsplit(url)
    if parts.path in ("", "/") and config.vhost:
        url = f"{parts.scheme}://{parts.netloc}/{quote(config.vhost, safe='')}" + (
            f"?{parts.query}" if parts.query else ""
        )
    if "heartbeat=" not in url:
        url += ("&" if "?" in url else "?") + f"heartbeat={int(config.heartbeat)}"
    return url


def _redis_url(config: Any) -> str:
    """A ``RedisConfig`` as one URL (password and database folded in)."""
    url = config.url
    password = getattr(config, "password", None)
    if password and "@" not in url.split("://", 1)[-1]:
        scheme, _, rest = url.partition("://")
        url = f"{scheme}://:{password}@{rest}"
    database = getattr(config, "database", 0) or 0
    if database and url.rstrip("/").count("/") <= 2:
        url = f"{url.rstrip('/')}/{database}"
    return url


# ---- running consumers -----------------------------------------------------------------------------


class _Stats:
    """Counters and gauges for /metrics, named after the OpenTelemetry messaging conventions."""

    #: gauge → help text (the names after ``cello_messaging_``)
    GAUGES = {
        "consumers_connected": "Consumers whose broker connection works (1 each; 0 while disconnected).",
        "kafka_consumer_lag": "Kafka messages of the partitions assigned to the consumers not yet committed "
        "(high watermark - committed offset).",
        "queue_depth": "Messages waiting in the queue, not yet delivered (RabbitMQ ready, SQS "
        "ApproximateNumberOfMessages, Redis LLEN, Redis stream group lag).",
    }

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}
        self.duration: dict[tuple[str, str], list[float]] = {}
        self.gauges: dict[tuple[str, str, str], float] = {}

    def inc(self, what: str, spec: ConsumerSpec, n: int = 1) -> None:
        key = (what, spec.kind, spec.source)
        self.counts[key] = self.counts.get(key, 0) + n

    def observe(self, spec: ConsumerSpec, seconds: float) -> None:
        d = self.duration.setdefault((spec.kind, spec.source), [0.0, 0])
        d[0] += seconds
        d[1] += 1

    def gauge(self, what: str, spec: ConsumerSpec, value: float) -> None:
        self.gauges[(what, spec.kind, spec.source)] = value

    def render(self) -> str:
        out = []
        helps = {
            "received": "Messages handed to a handler.",
            "acked": "Messages acknowledged after their handler finished.",
            "nacked": "Handler failures (exception or NACK), each retry counted.",
            "requeued": "Messages given back to the broker.",
            "rejected": "Messages dropped by the handler's REJECT.",
            "dead_lettered": "Messages sent to the dead-letter destination.",
        }
        for what, text in helps.items():
            name = f"cello_messaging_messages_{what}_total"
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} counter")
            for (w, system, dest), n in sorted(self.counts.items()):
                if w == what:
                    out.append(f'{name}{{messaging_system="{system}",messaging_destination_name="{_esc(dest)}"}} {n}')
        out.append("# HELP cello_messaging_process_duration_seconds Handler time per message.")
        out.append("# TYPE cello_messaging_process_duration_seconds summary")
        for (system, dest), (total, count) in sorted(self.duration.items()):
            labels = f'messaging_system="{system}",messaging_destination_name="{_esc(dest)}"'
            out.append(f"cello_messaging_process_duration_seconds_sum{{{labels}}} {total}")
            out.append(f"cello_messaging_process_duration_seconds_count{{{labels}}} {count}")
        for what, text in self.GAUGES.items():
            samples = [(k, v) for k, v in sorted(self.gauges.items()) if k[0] == what]
            if not samples:
                continue
            name = f"cello_messaging_{what}"
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} gauge")
            for (_, system, dest), value in samples:
                out.append(f'{name}{{messaging_system="{system}",messaging_destination_name="{_esc(dest)}"}} '
                           f"{value:g}")  # fmt: skip
        return "\n".join(out) + "\n"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _consumer_name(slot: int | None = None) -> str:
    """Stable per host and worker slot: a restarted worker takes over what its predecessor left."""
    if slot is None:
        from ._supervisor import WORKER_SLOT as slot
    return f"{socket.gethostname()}-{slot}"


class _Runner:
    """One declared consumer in one worker: fetch, dispatch with bounded concurrency, settle."""

    def __init__(self, spec: ConsumerSpec, stats: _Stats, consumer_name: str, interval: float = 10.0) -> None:
        self.spec = spec
        self.stats = stats
        self.consumer_name = consumer_name
        self.client: Any = None
        self.inflight: dict[str, asyncio.Task] = {}
        self.tails: dict[int | None, asyncio.Task] = {}  # kafka: the last task of each partition
        self.stopping = False
        self.healthy = False
        self.interval = interval  # seconds between two reads of the backlog gauge

    @property
    def healthy(self) -> bool:
        return self._healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        changed = getattr(self, "_healthy", None) is not value
        self._healthy = value
        if changed:
            self.stats.gauge("consumers_connected", self.spec, 1.0 if value else 0.0)

    @property
    def reports_backlog(self) -> bool:
        """Whether this runner reports the lag/depth gauge (every one under ``cello consume``)."""
        return True

    async def watch_backlog(self) -> None:
        """Refresh the backlog gauge every ``interval`` seconds, beside the fetch loop: Kafka's
        consumer lag of the partitions assigned here, else the queue's depth."""
        s = self.spec
        what = "kafka_consumer_lag" if s.kind == "kafka" else "queue_depth"
        failing = False
        while not self.stopping:
            if self.client is not None:
                try:
                    value = await self.client.backlog(_executor())
                except MessagingError as exc:  # the gauge keeps its last value; said once per failure streak
                    (log.debug if failing else log.warning)("%s: reading the %s of %s failed: %s", s.name,
                                                             what.replace("_", " "), s.source, exc)  # fmt: skip
                    failing = True
                else:
                    failing = False
                    if value is not None:
                        self.stats.gauge(what, s, float(value))
            await asyncio.sleep(self.interval)

    async def connect(self, deadline: float) -> None:
        """Connect, retrying until ``deadline`` (monotonic); raises BrokerUnavailable past it."""
        delay = 0.1
        while True:
            try:
                self.client = await self._open()
                self.healthy = True
                return
            except BrokerUnavailable:
                if time.monotonic() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _open(self) -> Any:
        s = self.spec
        ex = _executor()
        native = _native().BrokerConsumer
        if s.kind == "rabbitmq":
            from .config import RabbitMQConfig

            url = s.url or _amqp_url(RabbitMQConfig.local())
            return await native.rabbitmq(ex, url, s.source, s.dead_letter_name(), s.prefetch,
                                         s.connection_timeout_secs, s.declare)  # fmt: skip
        if s.kind == "sqs":
            q = s.sqs or {}
            conn = _sqs_connection(q, q.get("binding"))
            try:
                return await native.sqs(ex, s.source, *conn, s.dead_letter, s.declare, q["visibility_timeout_secs"],
                                        q["wait_time_secs"], s.connection_timeout_secs)  # fmt: skip
            except BrokerUnavailable as exc:  # name the endpoint: the queue URL may point elsewhere
                raise BrokerUnavailable(f"SQS at {conn[1] or conn[0]}: {exc}") from None
        if s.kind == "kafka":
            brokers = _kafka_brokers(s.url, s.source)
            group = s.group
            if group is None:
                binding = _kafka_binding(s.source)
                group = (binding.group if binding is not None else None) or s.source
            return await native.kafka(ex, brokers, s.source, group, s.client_id, s.dead_letter_name(),
                                      s.session_timeout_ms, s.auto_commit, s.connection_timeout_secs)  # fmt: skip
        if s.kind != "redis":
            raise FeatureNotAvailable(f"cello.messaging {s.kind} consumers", 15)
        url = s.url or "redis://127.0.0.1:6379"
        if s.mode == "stream":
            group = s.group or s.source
            return await native.redis_stream(ex, url, s.source, group, self.consumer_name, s.dead_letter_name(),
                                             s.claim_idle_secs, s.connection_timeout_secs)  # fmt: skip
        return await native.redis_list(ex, url, s.source, self.consumer_name, s.dead_letter_name(),
                                       s.connection_timeout_secs)  # fmt: skip

    async def run(self) -> None:
        watcher = asyncio.ensure_future(self.watch_backlog()) if self.reports_backlog else None
        try:
            await self._fetch_loop()
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _fetch_loop(self) -> None:
        s = self.spec
        slots = asyncio.Semaphore(s.concurrency)
        backoff = 0.1
        while not self.stopping:
            free = s.concurrency - len(self.inflight)
            if free <= 0:
                await asyncio.wait(list(self.inflight.values()), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                batch = await self.client.fetch(_executor(), min(free, s.batch_size), 1.0)
                self.healthy = True
                backoff = 0.1
            except MessagingError as exc:
                self.healthy = False
                log.warning("%s: fetching from %s failed: %s; retrying in %.1f s", s.name, s.source, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for raw in batch:
                msg = Message(raw)
                key = msg.id or id(msg)
                if msg.id and msg.id in self.inflight:
                    continue  # our own message, claimed back while its handler still runs
                self.stats.inc("received", s)
                prev = self.tails.get(msg.partition) if s.kind == "kafka" else None
                task = asyncio.ensure_future(self._process(msg, slots, prev))
                if s.kind == "kafka":
                    self.tails[msg.partition] = task
                self.inflight[key] = task
                task.add_done_callback(functools.partial(self._done, key))

    def _done(self, key: Any, task: asyncio.Task) -> None:
        self.inflight.pop(key, None)
        for partition, tail in list(self.tails.items()):
            if tail is task:
                del self.tails[partition]
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: settling a message failed: %s", self.spec.name, task.exception())

    async def close(self) -> None:
        """Leave the broker (Kafka: commit what finished, leave the group)."""
        close = getattr(self.client, "close", None)
        if close is None:
            return
        try:
            await close(_executor())
        except MessagingError as exc:
            log.warning("%s: closing the consumer of %s failed: %s", self.spec.name, self.spec.source, exc)

    async def drain(self, timeout: float) -> int:
        """Wait for the in-flight messages; returns how many were left unfinished."""
        tasks = list(self.inflight.values())
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        return len(pending)

    @staticmethod
    def _again(msg: Message) -> dict:
        """What a Kafka requeue publishes again besides the body: headers, key, delivery count."""
        return {"headers": list(msg.headers.items()), "key": msg.key, "delivery_count": msg.delivery_count}

    async def _call(self, msg: Message) -> Any:
        with _trace.process(self.spec, msg):  # a CONSUMER span continuing the message's trace
            fn = self.spec.handler
            if inspect.iscoroutinefunction(fn):
                return await fn(msg)
            result = await asyncio.to_thread(fn, msg)
            if inspect.isawaitable(result):
                result = await result
            return result

    async def _process(self, msg: Message, slots: asyncio.Semaphore, prev: asyncio.Task | None = None) -> None:
        s = self.spec
        ex = _executor()
        if prev is not None:
            await asyncio.wait([prev])  # Kafka: after the message before it in its partition
        async with slots:
            if s.kind == "kafka" and (self.stopping or not self.client.begin(msg.id)):
                # Not begun: left uncommitted for this partition's next owner (or the next worker).
                return
            failures = max(0, msg.delivery_count - 1)  # earlier deliveries that did not finish
            while True:
                t0 = time.perf_counter()
                error = None
                try:
                    result = await self._call(msg)
                except Exception as exc:  # noqa: BLE001 - a failing handler is a NACK
                    result, error = MessageResult.NACK, f"{type(exc).__name__}: {exc}"
                    log.warning("%s: handler failed on %r: %s", s.name, msg, error)
                self.stats.observe(s, time.perf_counter() - t0)
                decision = msg._decision or (result if isinstance(result, MessageResult) else MessageResult.ACK)
                if decision is MessageResult.ACK:
                    # Kafka with auto_commit settles in place (an offset store): no round trip per message.
                    if not self.client.ack_now(msg.id):
                        await self.client.ack(ex, msg.id, msg.body)
                    self.stats.inc("acked", s)
                elif decision is MessageResult.NACK:
                    self.stats.inc("nacked", s)
                    failures += 1
                    if failures > s.max_retries:
                        reason = error or "the handler returned NACK"
                        await self.client.dead_letter(ex, msg.id, msg.body, list(msg.headers.items()), msg.key,
                                                      msg.delivery_count, reason)  # fmt: skip
                        self.stats.inc("dead_lettered", s)
                    elif self.stopping and s.kind == "kafka":
                        pass  # left uncommitted: the partition's next reader retries it, in order
                    elif self.stopping:  # the next worker retries it
                        await self.client.nack(ex, msg.id, msg.body, True, **self._again(msg))
                        self.stats.inc("requeued", s)
                    elif s.kind == "sqs":  # visible again after the backoff: SQS delivers and counts it
                        await self.client.nack(ex, msg.id, msg.body, True, s.retry_backoff_secs * 2 ** (failures - 1))
                    else:
                        await asyncio.sleep(s.retry_backoff_secs * 2 ** (failures - 1))
                        msg.delivery_count += 1
                        msg._decision = None
                        continue
                elif decision is MessageResult.REQUEUE:
                    await self.client.nack(ex, msg.id, msg.body, True, **self._again(msg))
                    self.stats.inc("requeued", s)
                elif decision is MessageResult.REJECT:
                    await self.client.nack(ex, msg.id, msg.body, False, **self._again(msg))
                    self.stats.inc("rejected", s)
                else:
                    await self.client.dead_letter(ex, msg.id, msg.body, list(msg.headers.items()), msg.key,
                                                  msg.delivery_count, "dead-lettered by the handler")  # fmt: skip
                    self.stats.inc("dead_lettered", s)
                return


# ---- the Producer and Consumer of the manual API -------------------------------------------------


def _kind_of(config: Any) -> str:
    from .config import KafkaConfig, RabbitMQConfig, RedisConfig, SqsConfig

    for cls, kind in ((RedisConfig, "redis"), (RabbitMQConfig, "rabbitmq"), (KafkaConfig, "kafka"), (SqsConfig, "sqs")):
        if isinstance(config, cls):
            return kind
    raise TypeError(f"a messaging config is a RedisConfig, RabbitMQConfig, KafkaConfig or SqsConfig, not {config!r}")


def _unbuilt(kind: str) -> FeatureNotAvailable:
    return FeatureNotAvailable(f"cello.messaging with {kind}", 15, hint="Redis is built; this broker is not yet")


class Producer:
    """Publishes messages; ``send`` returns once the broker has the message (its id).

    Redis: ``mode="stream"`` (``XADD``, the default) or ``mode="list"`` (``LPUSH``). RabbitMQ:
    ``topic`` is the queue (the default exchange routes by name), publisher confirms on, an
    unroutable message is an error; ``key`` travels as the AMQP ``message_id``. SQS: ``topic``
    is the queue URL, ``send`` returns SQS's message id, headers travel as message attributes
    (ten at most), ``key`` as the attribute ``x-message-key`` (FIFO queues: the message group
    id). Values that are not ``bytes``/``str`` are sent as JSON (serialised in Rust)."""

    def __init__(self, native: Any, mode: str) -> None:
        self._native = native
        self._mode = mode

    @classmethod
    async def connect(cls, config: Any, mode: str = "stream") -> Producer:
        kind = _kind_of(config)
        if kind == "rabbitmq":
            native = await _native().BrokerProducer.rabbitmq(_executor(), _amqp_url(config),
                                                             config.connection_timeout_secs)  # fmt: skip
            return cls(native, "queue")
        if kind == "sqs":
            conn = _sqs_connection(_sqs_config_settings(config), _sqs_binding())
            native = await _native().BrokerProducer.sqs(_executor(), *conn, 5.0)
            return cls(native, "sqs")
        if kind == "kafka":
            brokers = _kafka_brokers(config.brokers)
            native = await _native().BrokerProducer.kafka(_executor(), brokers, config.client_id, 5.0)
            return cls(native, "kafka")
        if kind != "redis":
            raise _unbuilt(kind)
        if mode not in ("stream", "list"):
            raise ValueError(f"mode must be 'stream' or 'list', got {mode!r}")
        native = await _native().BrokerProducer.redis(_executor(), _redis_url(config), config.connection_timeout_secs)
        return cls(native, mode)

    async def send(self, topic: str, value: Any, key: str | None = None, headers: dict | None = None) -> str:
        if self._native is None:
            raise MessagingError("the producer is closed")
        if self._mode == "list" and (key is not None or headers):
            raise ValueError("a Redis list carries bare bodies: no key or headers")
        hs = [(str(k), str(v)) for k, v in (headers or {}).items()]
        native, mode = self._native, self._mode
        # A PRODUCER span whose W3C context travels in the headers (not on Redis lists: no headers).
        system = {"queue": "rabbitmq", "kafka": "kafka", "sqs": "aws_sqs"}.get(mode, "redis")
        return await _trace.publish(system, topic, hs,
                                    lambda h: native.send(_executor(), mode, topic, value, key, h),
                                    inject=mode != "list")  # fmt: skip

    async def declare_queue(self, queue: str, dead_letter: str | None = None) -> None:
        """RabbitMQ: declare ``queue`` as ``rabbitmq_consumer`` does (durable, dead-letter exchange)."""
        if self._mode != "queue":
            raise MessagingError("declare_queue is for RabbitMQ producers")
        await self._native.declare_queue(_executor(), queue, dead_letter or f"{queue}.dead")

    async def send_batch(self, messages: Iterable[Any]) -> list[str]:
        """Each item a dict (``topic``, ``value``, ``key``, ``headers``) or a tuple in ``send``'s
        order; returns their ids, in order, once every one is confirmed. Each message gets its
        own trace context in its headers, as with ``send``.

        The batch goes in one round: Kafka hands every message to the producer (in order, so
        their order per partition holds) and then awaits all acknowledgements; SQS sends
        ``SendMessageBatch`` requests of up to ten messages per queue (one after the other for a
        FIFO queue); Redis sends every ``XADD`` (``LPUSH`` in list mode) in one pipeline;
        RabbitMQ publishes every message and then awaits all publisher confirms. When some
        messages fail, the others are still sent and ``BatchSendError`` names each failed
        message (index, destination, why)."""
        if self._native is None:
            raise MessagingError("the producer is closed")
        items = [_batch_item(m) for m in messages]
        if not items:
            return []
        native, mode = self._native, self._mode

        async def send(headers: list[list[tuple[str, str]]]) -> list[Any]:
            batch = [(topic, value, key, h) for (topic, value, key, _), h in zip(items, headers, strict=True)]
            answers = await native.send_batch(_executor(), batch, mode)
            return [mid if kind is None else _batch_failure(kind, text) for mid, kind, text in answers]

        if mode == "list":  # bare bodies: no headers, so no trace context either (as ``send``)
            if any(key is not None or headers for _, _, key, headers in items):
                raise ValueError("a Redis list carries bare bodies: no key or headers")
            results = await send([[] for _ in items])
        else:
            hs = [(topic, [(str(k), str(v)) for k, v in (headers or {}).items()]) for topic, _, _, headers in items]
            system = {"queue": "rabbitmq", "kafka": "kafka", "sqs": "aws_sqs"}.get(mode, "redis")
            results = await _trace.publish_batch(system, hs, send)
        if any(isinstance(r, BaseException) for r in results):
            raise BatchSendError(results, [topic for topic, *_ in items])
        return results

    async def close(self) -> None:
        self._native = None

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class Consumer:
    """Pull messages yourself: ``subscribe``, ``poll``, ``commit`` (acknowledge) and ``close``.

    Redis: ``group`` set consumes streams with that consumer group; unset, lists. RabbitMQ:
    ``subscribe`` names queues (declared as ``rabbitmq_consumer`` declares them). SQS:
    ``subscribe`` names queue URLs."""

    def __init__(self, config: Any, group: str | None, consumer_name: str) -> None:
        self._config = config
        self._group = group
        self._name = consumer_name
        self._clients: list[Any] = []
        self._by_source: dict[str, Any] = {}
        self._next = 0
        self._buffer: list[tuple[Any, Message]] = []

    @classmethod
    async def connect(cls, config: Any, group: str | None = None, consumer_name: str | None = None) -> Consumer:
        kind = _kind_of(config)
        if kind not in ("redis", "rabbitmq", "sqs", "kafka"):
            raise _unbuilt(kind)
        return cls(config, group, consumer_name or _consumer_name())

    async def subscribe(self, topics: str | Iterable[str]) -> None:
        names = [topics] if isinstance(topics, str) else list(topics)
        native, ex, c = _native().BrokerConsumer, _executor(), self._config
        if _kind_of(c) == "kafka":
            for name in names:
                binding = _kafka_binding(name)
                group = self._group or c.group_id or (binding.group if binding else None) or name
                client = await native.kafka(ex, _kafka_brokers(c.brokers, name), name, group, c.client_id,
                                            f"{name}.dlq", c.session_timeout_ms, c.auto_commit, 5.0)  # fmt: skip
                self._clients.append(client)
                self._by_source[name] = client
            return
        rabbit = _kind_of(c) == "rabbitmq"
        sqs = _kind_of(c) == "sqs"
        url = _amqp_url(c) if rabbit else None if sqs else _redis_url(c)
        for name in names:
            if sqs:
                q = _sqs_config_settings(c)
                client = await native.sqs(ex, name, *_sqs_connection(q, _sqs_binding()), None, True,
                                          q["visibility_timeout_secs"], q["wait_time_secs"], 5.0)  # fmt: skip
            elif rabbit:
                client = await native.rabbitmq(ex, url, name, f"{name}.dead", c.prefetch_count,
                                               c.connection_timeout_secs, True)  # fmt: skip
            elif self._group:
                client = await native.redis_stream(ex, url, name, self._group, self._name, f"{name}:dead", 30.0,
                                                   c.connection_timeout_secs)  # fmt: skip
            else:
                client = await native.redis_list(ex, url, name, self._name, f"{name}:dead", c.connection_timeout_secs)
            self._clients.append(client)
            self._by_source[name] = client

    async def poll(self, timeout_ms: int = 1000) -> Message | None:
        """The next message, or None when none came within ``timeout_ms``."""
        if not self._clients:
            raise MessagingError("subscribe() first")
        if self._buffer:
            return self._buffer.pop(0)[1]
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            client = self._clients[self._next % len(self._clients)]
            self._next += 1
            wait = max(0.01, min(deadline - time.monotonic(), 1.0) / len(self._clients))
            batch = await client.fetch(_executor(), 1, wait)
            if batch:
                return Message(batch[0])
            if time.monotonic() >= deadline:
                return None

    async def commit(self, message: Message) -> None:
        """Acknowledge ``message``: it is done."""
        await self._by_source[message.source].ack(_executor(), message.id, message.body)

    async def close(self) -> None:
        for client in self._clients:
            await client.close(_executor())  # Kafka: commits the committed messages' offsets, leaves the group
        self._clients.clear()
        self._by_source.clear()


# ---- the process `cello consume` runs -------------------------------------------------------------


class ConsumerApp:
    """Runs ``specs`` in one process with a small admin HTTP server; what the supervisor of
    ``cello run`` forks and watches (it calls ``_serve``)."""

    def __init__(
        self,
        specs: list[ConsumerSpec],
        startup_timeout: float = 10.0,
        metrics_interval: float = 10.0,
        telemetry: dict | None = None,
    ) -> None:
        if not specs:
            raise ValueError("no consumer to run")
        _check_positive("metrics_interval", metrics_interval, 0.01)
        self.specs = specs
        self.startup_timeout = startup_timeout
        self.metrics_interval = metrics_interval
        # The `enable_telemetry` settings of the consumers' app: spans exported from each worker.
        self.telemetry = telemetry
        self._health = True  # the supervisor's apply_options must not add HTTP health checks

    def _serve(self, opts: Any, on_ready=None, on_beat=None, on_executor=None, listen_fd: int | None = None) -> None:
        if self.telemetry:  # in the worker, after the fork: the exporter's threads are its own
            _native().start_telemetry(_json.dumps({"telemetry": self.telemetry}))
        try:
            asyncio.run(self._main(opts, on_ready, on_beat, on_executor, listen_fd))
        finally:
            if self.telemetry:
                _native().stop_telemetry(5.0)  # export the spans still queued

    async def _main(self, opts: Any, on_ready, on_beat, on_executor, listen_fd: int | None = None) -> None:
        import signal

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:  # a second SIGTERM/SIGINT: quit now
                os._exit(1)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        stats = _Stats()
        runners = [_Runner(s, stats, _consumer_name(), self.metrics_interval) for s in self.specs]
        deadline = time.monotonic() + self.startup_timeout
        await asyncio.gather(*(r.connect(deadline) for r in runners))
        draining = False

        async def admin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                parts = head.split(b"\r\n", 1)[0].split()
                path = parts[1].decode(errors="replace").split("?", 1)[0] if len(parts) >= 2 else ""
                if path == "/health/live":
                    status, ctype, body = 200, "application/json", b'{"status":"ok"}'
                elif path == "/health/ready":
                    ok = not draining and all(r.healthy for r in runners)
                    status, ctype = (200 if ok else 503), "application/json"
                    body = _json.dumps({"status": "ok" if ok else "unavailable", "draining": draining,
                                        "consumers": {r.spec.name: r.healthy for r in runners}}).encode()  # fmt: skip
                elif path == "/metrics":
                    status, ctype, body = 200, "text/plain; version=0.0.4", stats.render().encode()
                else:
                    status, ctype = 404, "application/problem+json"
                    body = _json.dumps({"type": "about:blank", "title": "Not Found", "status": 404}).encode()
                reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
                writer.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
                             f"connection: close\r\n\r\n".encode() + body)  # fmt: skip
                await writer.drain()
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                pass
            finally:
                writer.close()

        if listen_fd is not None:
            # The supervisor's listening socket of this worker slot (the admin port): taken over.
            import socket

            server = await asyncio.start_server(admin, sock=socket.socket(fileno=listen_fd))
        else:
            server = await asyncio.start_server(admin, opts.host, opts.port, reuse_port=True, reuse_address=True)
        address = server.sockets[0].getsockname()[:2]
        if on_executor is not None:
            on_executor(_BeatInfo(opts.worker_timeout or 30.0))
        tasks = [asyncio.ensure_future(r.run()) for r in runners]
        if on_ready is not None:
            on_ready(address)
        log.info("consuming %s (admin on %s:%d)", ", ".join(f"{s.kind}:{s.source}" for s in self.specs), *address)

        async def beat() -> None:
            while True:
                if on_beat is not None:
                    on_beat()
                await asyncio.sleep(1.0)

        beater = asyncio.ensure_future(beat())
        waiter = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not waiter and t.exception() is not None:
                raise t.exception()
        # Drain: stop fetching, let in-flight handlers finish and settle, then leave.
        draining = True
        for r in runners:
            r.stopping = True
        await asyncio.wait(tasks, timeout=2.0)  # the fetch under way returns within its 1 s block
        left = sum(await asyncio.gather(*(r.drain(opts.shutdown_timeout) for r in runners)))
        if left:
            log.warning("%d message(s) still in their handlers after %.0f s: left for redelivery", left,
                        opts.shutdown_timeout)  # fmt: skip
        await asyncio.gather(*(r.close() for r in runners))
        beater.cancel()
        server.close()


@dataclass
class _BeatInfo:
    worker_timeout: float


def consumers_of(obj: Any) -> list[ConsumerSpec]:
    """The consumer a decorated handler declares, or every consumer declared in ``obj``'s module
    (``obj`` an App, a module or anything defined there)."""
    spec = getattr(obj, "__cello_consumer__", None)
    if spec is not None:
        return [spec]
    module = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
    if module is None:
        return []
    mod = sys.modules.get(module)
    found = []
    for value in vars(mod).values() if mod else ():
        s = getattr(value, "__cello_consumer__", None)
        if isinstance(s, ConsumerSpec) and s not in found:
            found.append(s)
    return found


def telemetry_of(obj: Any) -> dict | None:
    """The ``enable_telemetry`` settings of ``obj`` (an App) or of an App in ``obj``'s module."""
    own = getattr(obj, "_telemetry", None)
    if isinstance(own, dict) and own:
        return dict(own)
    module = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
    mod = sys.modules.get(module) if module else None
    for value in vars(mod).values() if mod else ():
        found = getattr(value, "_telemetry", None) if not inspect.isclass(value) else None
        if isinstance(found, dict) and found:
            return dict(found)
    return None


def apply_binding(spec: ConsumerSpec, binding: _bindings.QueueBinding) -> ConsumerSpec:
    """The operator's binding gives the broker (and the list/queue name) of ``spec``."""
    import dataclasses

    if binding.kind != spec.kind:
        raise ValueError(f"queue binding {binding.name!r} is {binding.kind}, but {spec.name} consumes {spec.kind}")
    changes: dict[str, Any] = {}
    if spec.kind == "redis":
        address = binding.address
        if address:
            url = address if "://" in address else f"redis://{address}"
            if binding.password and "@" not in url.split("://", 1)[1]:
                scheme, _, rest = url.partition("://")
                url = f"{scheme}://:{binding.password}@{rest}"
            changes["url"] = url
        # The binding names a list (LIST) or a stream (STREAM, with the operator's GROUP, the
        # group KEDA watches); the decorator's mode must agree: no silent switch between the two.
        if binding.list and spec.mode != "list":
            raise ValueError(f"queue binding {binding.name!r} is a Redis list, but {spec.name} reads a stream "
                             "(set streamName in the CellApp queue, or mode='list')")  # fmt: skip
        if binding.stream and spec.mode != "stream":
            raise ValueError(f"queue binding {binding.name!r} is a Redis stream, but {spec.name} reads a list "
                             "(set listName in the CellApp queue, or give the consumer a group)")  # fmt: skip
        if binding.list or binding.stream:
            changes["source"] = binding.list or binding.stream
        if binding.stream and binding.group:
            changes["group"] = binding.group
    elif spec.kind == "kafka":
        _no_kafka_password(binding)
        if binding.bootstrap_servers:
            changes["url"] = binding.bootstrap_servers
        if binding.topic:
            changes["source"] = binding.topic
        if binding.group:
            changes["group"] = binding.group
    elif spec.kind == "rabbitmq":
        if binding.url:
            changes["url"] = binding.url
        if binding.queue:
            changes["source"] = binding.queue
    elif spec.kind == "sqs":
        # The binding names the queue and the service; credentials are read when connecting.
        sqs = dict(spec.sqs or {})
        for field, key in (("region", "region"), ("endpoint", "endpoint_url")):
            if binding.settings.get(field):
                sqs[key] = binding.settings[field]
        sqs["binding"] = binding
        changes["sqs"] = sqs
        if binding.queue_url:
            changes["source"] = binding.queue_url
    return dataclasses.replace(spec, **changes)


__all__ = [
    "BatchSendError",
    "BrokerUnavailable",
    "Consumer",
    "FeatureNotAvailable",
    "Message",
    "MessageResult",
    "MessagingError",
    "Producer",
    "kafka_consumer",
    "kafka_producer",
    "rabbitmq_consumer",
    "redis_consumer",
    "sqs_consumer",
]
