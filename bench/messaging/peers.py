"""The plain-Python side of bench/messaging: the same work as cello_app.py (consume, JSON-decode
the body, count, acknowledge) with the usual asyncio client of each broker, idiomatically:

- kafka:    aiokafka ``getmany`` batches, handler per message, ``commit()`` after each batch
- rabbitmq: aio-pika with the same prefetch, ``ack()`` per message after its handler
- sqs:      boto3 in a thread (``asyncio.to_thread``): ReceiveMessage of 10, handler per
            message, one DeleteMessageBatch per receive
- redis:    redis-py asyncio ``XREADGROUP`` of BATCH, handler per entry, one ``XACK`` per batch

Run with the peers' venv (bench/messaging/requirements-lock.txt):
``python peers.py KIND N OUT SOURCE [group/url/endpoint] [batch]``. Writes ``{"n", "seconds"}``
(first handler start to the N-th handler end, as cello_app.py measures) to OUT and exits after
its last acknowledgement."""

from __future__ import annotations

import asyncio
import json
import sys
import time


class Count:
    def __init__(self, n: int, out: str) -> None:
        self.want, self.out, self.n, self.t0 = n, out, 0, 0.0

    def handle(self, body: bytes) -> None:
        if self.n == 0:
            self.t0 = time.perf_counter()
        json.loads(body)
        self.n += 1
        if self.n == self.want:
            elapsed = time.perf_counter() - self.t0
            with open(self.out, "w") as f:
                json.dump({"n": self.want, "seconds": elapsed}, f)

    @property
    def done(self) -> bool:
        return self.n >= self.want


async def kafka(c: Count, topic: str, brokers: str, group: str, batch: int) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=brokers, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        while not c.done:
            batches = await consumer.getmany(timeout_ms=1000, max_records=batch)
            for messages in batches.values():
                for m in messages:
                    c.handle(m.value)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()


async def rabbitmq(c: Count, queue: str, url: str, batch: int) -> None:
    import aio_pika

    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=batch)
        q = await channel.get_queue(queue, ensure=True)
        async with q.iterator() as it:
            async for message in it:
                c.handle(message.body)
                await message.ack()
                if c.done:
                    break
    finally:
        await conn.close()


async def sqs(c: Count, queue_url: str, endpoint: str) -> None:
    import boto3

    client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")  # fmt: skip
    while not c.done:
        out = await asyncio.to_thread(client.receive_message, QueueUrl=queue_url, MaxNumberOfMessages=10,
                                      WaitTimeSeconds=1)  # fmt: skip
        messages = out.get("Messages", [])
        for m in messages:
            c.handle(m["Body"])
        if messages:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            res = await asyncio.to_thread(client.delete_message_batch, QueueUrl=queue_url, Entries=entries)
            if res.get("Failed"):
                raise RuntimeError(f"DeleteMessageBatch failed: {res['Failed']}")


async def redis(c: Count, stream: str, url: str, group: str, batch: int) -> None:
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    try:
        try:
            await r.xgroup_create(stream, group, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        while not c.done:
            reply = await r.xreadgroup(group, "peer-0", {stream: ">"}, count=batch, block=1000)
            ids = []
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    c.handle(fields[b"body"])
                    ids.append(entry_id)
            if ids:
                await r.xack(stream, group, *ids)
    finally:
        await r.aclose()


def main() -> None:
    kind, n, out, source = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rest = sys.argv[5:]
    c = Count(n, out)
    if kind == "kafka":
        run = kafka(c, source, rest[0], rest[1], int(rest[2]))
    elif kind == "rabbitmq":
        run = rabbitmq(c, source, rest[0], int(rest[1]))
    elif kind == "sqs":
        run = sqs(c, source, rest[0])
    elif kind == "redis":
        run = redis(c, source, rest[0], rest[1], int(rest[2]))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    asyncio.run(run)


if __name__ == "__main__":
    main()
