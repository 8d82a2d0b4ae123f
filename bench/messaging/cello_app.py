"""The Cello side of bench/messaging: one consumer, chosen by BENCH_KIND, run by
``cello consume cello_app:handle --workers 1``. The handler does the peers' work (JSON-decode
the body, count); at the BENCH_N-th message it writes the timing to BENCH_OUT."""

from __future__ import annotations

import json
import os
import time

from cello import messaging

KIND = os.environ["BENCH_KIND"]
N = int(os.environ["BENCH_N"])
OUT = os.environ["BENCH_OUT"]
SOURCE = os.environ["BENCH_SOURCE"]  # topic, queue, queue URL or stream
BATCH = int(os.environ.get("BENCH_BATCH", "100"))
state = {"n": 0, "t0": 0.0}


async def handle(message: messaging.Message) -> None:
    if state["n"] == 0:
        state["t0"] = time.perf_counter()
    message.json()
    state["n"] += 1
    if state["n"] == N:
        elapsed = time.perf_counter() - state["t0"]
        with open(OUT, "w") as f:
            json.dump({"n": N, "seconds": elapsed}, f)


if KIND == "kafka":
    handle = messaging.kafka_consumer(SOURCE, os.environ["BENCH_GROUP"], brokers=os.environ["BENCH_BROKERS"],
                                      batch_size=BATCH, concurrency=BATCH)(handle)  # fmt: skip
elif KIND == "rabbitmq":
    handle = messaging.rabbitmq_consumer(SOURCE, BATCH, url=os.environ["BENCH_URL"], declare=False)(handle)
elif KIND == "sqs":
    handle = messaging.sqs_consumer(SOURCE, endpoint_url=os.environ["BENCH_ENDPOINT"], region="us-east-1",
                                    batch_size=10, concurrency=BATCH, wait_time_secs=1)(handle)  # fmt: skip
elif KIND == "redis":
    handle = messaging.redis_consumer(SOURCE, os.environ["BENCH_GROUP"], url=os.environ["BENCH_URL"],
                                      batch_size=BATCH, concurrency=BATCH)(handle)  # fmt: skip
else:
    raise SystemExit(f"BENCH_KIND {KIND!r}: kafka, rabbitmq, sqs or redis")
