"""Queue bindings the operator gives an app through its environment.

The naming contract (one golden table, ``tests/operator/env-contract.json``, read by the
operator's Rust tests and by this module's tests): ``CELLO_QUEUES`` lists the binding names,
comma-separated; a binding named ``order-events`` has the prefix
``CELLO_QUEUE_ORDER_EVENTS_`` (upper case, ``-`` becomes ``_``) and the variables ``KIND``
(kafka | rabbitmq | redis | sqs) plus, per kind:

========  =====================================================
kafka     ``BOOTSTRAP_SERVERS``, ``TOPIC``, ``GROUP``, ``PASSWORD``
rabbitmq  ``URL``, ``QUEUE``
redis     ``ADDRESS``, ``LIST``, ``PASSWORD``
sqs       ``QUEUE_URL``, ``REGION``, ``ENDPOINT_URL``, ``ACCESS_KEY_ID``, ``SECRET_ACCESS_KEY``
========  =====================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import _env

KINDS = {
    "kafka": ("bootstrap_servers", "topic", "group", "password"),
    "rabbitmq": ("url", "queue"),
    "redis": ("address", "list", "password"),
    "sqs": ("queue_url", "region", "endpoint_url", "access_key_id", "secret_access_key"),
}


@dataclass(frozen=True)
class QueueBinding:
    """One entry of ``CellApp.spec.queues[]`` as the app sees it."""

    name: str
    kind: str
    settings: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, item: str) -> str | None:
        # bootstrap_servers, topic, url, ... as attributes; None when not set.
        if item in KINDS.get(self.kind, ()):
            return self.settings.get(item)
        raise AttributeError(item)


def env_prefix(name: str) -> str:
    """``order-events`` → ``CELLO_QUEUE_ORDER_EVENTS_``."""
    return "CELLO_QUEUE_" + name.upper().replace("-", "_").replace(".", "_") + "_"


def queue_bindings(environ: Mapping[str, str] | None = None) -> dict[str, QueueBinding]:
    """The bindings listed in ``CELLO_QUEUES``; a binding with an unknown kind is an error."""
    env = os.environ if environ is None else environ
    out: dict[str, QueueBinding] = {}
    for name in filter(None, (n.strip() for n in (_env.lookup("CELLO_QUEUES", env) or "").split(","))):
        prefix = env_prefix(name)
        kind = (_env.lookup(prefix + "KIND", env) or "").strip().lower()
        if kind not in KINDS:
            raise ValueError(f"queue binding {name!r}: {prefix}KIND is {kind!r}, expected one of {sorted(KINDS)}")
        settings = {key: env[prefix + key.upper()] for key in KINDS[kind] if prefix + key.upper() in env}
        out[name] = QueueBinding(name=name, kind=kind, settings=settings)
    return out
