"""``cello.messaging``: Kafka, RabbitMQ, SQS and Redis consumers and producers — built by issue 15.

``MessageResult`` is plain data and works today; the rest raises ``FeatureNotAvailable`` when used.
"""

import enum

from ._unavailable import FeatureNotAvailable, install


class MessageResult(enum.Enum):
    """What a consumer handler answers for a message."""

    ACK = "ack"
    NACK = "nack"
    REJECT = "reject"
    REQUEUE = "requeue"
    DEAD_LETTER = "dead_letter"


__all__ = [
    "FeatureNotAvailable",
    "MessageResult",
    *install(
        globals(),
        15,
        ["Message", "Producer", "Consumer"],
        ["kafka_consumer", "rabbitmq_consumer", "sqs_consumer", "redis_consumer", "kafka_producer"],
    ),
]
