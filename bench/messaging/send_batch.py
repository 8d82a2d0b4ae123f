"""``Producer.send_batch`` against ``send`` one message after the other (each confirmed), Kafka
(the mock cluster), SQS (moto), Redis (a stream and a list, the server on 127.0.0.1:6379) and
RabbitMQ (127.0.0.1:5672, a durable queue), interleaved repetitions. Run with the dev venv:

    .venv/bin/python bench/messaging/send_batch.py --reps 3 [--n 2000] [--sqs-n 200] [kafka sqs redis ...]

Prints messages per second of both and the ratio."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import AMQP, CREDS, REDIS, Kafka, Sqs, body  # noqa: E402


async def rates(kind: str, broker, n: int, reps: int) -> dict[str, list[float]]:
    from cello.config import KafkaConfig, SqsConfig
    from cello.messaging import Producer

    if kind == "kafka":
        p = await Producer.connect(KafkaConfig(brokers=broker.brokers))
        dest = broker.topic
    elif kind in ("redis-stream", "redis-list"):
        from cello.config import RedisConfig

        p = await Producer.connect(RedisConfig(url=REDIS), mode=kind.split("-")[1])
        dest = f"bench:send-batch:{time.monotonic_ns()}"
    elif kind == "rabbitmq":
        from cello.config import RabbitMQConfig

        p = await Producer.connect(RabbitMQConfig(url=AMQP))
        dest = f"bench-send-batch-{time.monotonic_ns()}"
        await p.declare_queue(dest)
    else:
        p = await Producer.connect(SqsConfig(endpoint_url=broker.endpoint))
        dest = broker.client.create_queue(QueueName=f"send-batch-{time.monotonic_ns()}")["QueueUrl"]
    items = [(dest, body(i)) if kind == "redis-list" else (dest, body(i), f"k{i % 64}") for i in range(n)]
    out: dict[str, list[float]] = {"send": [], "send_batch": []}
    for rep in range(reps):
        for how in ("send", "send_batch") if rep % 2 == 0 else ("send_batch", "send"):
            t0 = time.perf_counter()
            if how == "send":
                for item in items:
                    await p.send(*item)
            else:
                await p.send_batch(items)
            out[how].append(n / (time.perf_counter() - t0))
            print(f"  {kind} rep {rep + 1} {how}: {out[how][-1]:,.0f} msg/s", file=sys.stderr, flush=True)
    await p.close()
    if kind.startswith("redis"):
        import redis

        redis.Redis.from_url(REDIS).delete(dest)
    elif kind == "rabbitmq":
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(AMQP))
        conn.channel().queue_delete(dest)
        conn.channel().queue_delete(f"{dest}.dead")
        conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000, help="messages per Kafka batch")
    ap.add_argument("--sqs-n", type=int, default=200, help="messages per SQS batch")
    ap.add_argument("--broker-cpu", default="1")
    ap.add_argument("kinds", nargs="*", default=["kafka", "sqs", "redis-stream", "redis-list", "rabbitmq"])
    args = ap.parse_args()
    os.environ.update(CREDS)  # moto's
    print("| broker | N | send one by one, msg/s | send_batch, msg/s | × |")
    print("|---|---:|---:|---:|---:|")
    for kind in args.kinds:
        n = args.sqs_n if kind == "sqs" else args.n
        broker = Kafka(0, args.broker_cpu) if kind == "kafka" else Sqs(n, args.broker_cpu) if kind == "sqs" else None
        try:
            r = asyncio.run(rates(kind, broker, n, args.reps))
        finally:
            if broker is not None:
                broker.close()
        one, batch = statistics.median(r["send"]), statistics.median(r["send_batch"])
        print(f"| {kind} | {n:,} | {one:,.0f} | {batch:,.0f} | {batch / one:.1f} |", flush=True)


if __name__ == "__main__":
    main()
