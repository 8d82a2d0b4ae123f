"""``Producer.send_batch`` against ``send`` one message after the other (each confirmed), Kafka
(the mock cluster) and SQS (moto), interleaved repetitions. Run with the dev venv:

    .venv/bin/python bench/messaging/send_batch.py --reps 3 [--n 2000] [--sqs-n 200]

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
from run import CREDS, Kafka, Sqs, body  # noqa: E402


async def rates(kind: str, broker, n: int, reps: int) -> dict[str, list[float]]:
    from cello.config import KafkaConfig, SqsConfig
    from cello.messaging import Producer

    if kind == "kafka":
        p = await Producer.connect(KafkaConfig(brokers=broker.brokers))
        dest = broker.topic
    else:
        p = await Producer.connect(SqsConfig(endpoint_url=broker.endpoint))
        dest = broker.client.create_queue(QueueName=f"send-batch-{time.monotonic_ns()}")["QueueUrl"]
    items = [(dest, body(i), f"k{i % 64}") for i in range(n)]
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
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000, help="messages per Kafka batch")
    ap.add_argument("--sqs-n", type=int, default=200, help="messages per SQS batch")
    ap.add_argument("--broker-cpu", default="1")
    args = ap.parse_args()
    os.environ.update(CREDS)  # moto's
    print("| broker | N | send one by one, msg/s | send_batch, msg/s | × |")
    print("|---|---:|---:|---:|---:|")
    for kind, n in (("kafka", args.n), ("sqs", args.sqs_n)):
        broker = Kafka(0, args.broker_cpu) if kind == "kafka" else Sqs(n, args.broker_cpu)
        try:
            r = asyncio.run(rates(kind, broker, n, args.reps))
        finally:
            broker.close()
        one, batch = statistics.median(r["send"]), statistics.median(r["send_batch"])
        print(f"| {kind} | {n:,} | {one:,.0f} | {batch:,.0f} | {batch / one:.1f} |", flush=True)


if __name__ == "__main__":
    main()
