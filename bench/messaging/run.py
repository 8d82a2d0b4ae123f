"""Messages per second per worker, consume → handler → ack, Cello against a plain Python
client, for Kafka, RabbitMQ, SQS and Redis streams (issue 15). See README.md.

Run with the dev venv (it has cello, confluent-kafka, pika, boto3, redis and moto):

    .venv/bin/python bench/messaging/run.py --reps 3 [--peer-python PATH] [kafka rabbitmq sqs redis]

For each broker the same N messages are made ready for each run: Kafka and Redis streams are
logs, filled once and read by a new consumer group per run; a RabbitMQ queue and an SQS queue
are filled anew before each run. A run is one process draining them — ``cello consume
cello_app:handle --workers 1`` or ``peers.py`` — pinned to one CPU (``--cpu``); the time is
from the first handler start to the N-th handler end, measured inside that process, so
connecting and joining a group are not counted. After each run the broker is asked whether
everything was acknowledged (committed offsets, queue depth, pending entries); a run that left
anything unacknowledged fails the benchmark. Runs of the two sides alternate, the side going
first swapping each repetition.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_N = {"kafka": 50_000, "rabbitmq": 20_000, "sqs": 2_000, "redis": 50_000}
AMQP = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def body(i: int) -> bytes:
    """A small order, ~120 bytes of JSON."""
    return json.dumps({"id": f"order-{i:07d}", "n": i, "customer": "c-42", "amount": 12.5,
                       "items": [{"sku": "A1", "qty": 2}, {"sku": "B7", "qty": 1}]}).encode()  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"{what}: not within {timeout:.0f} s")


def taskset(cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu] if cpu and shutil.which("taskset") else []


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Signal the process group we started and wait for it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        raise SystemExit(f"pid {proc.pid} did not stop within {timeout:.0f} s") from None


# ---- the brokers ---------------------------------------------------------------------------------


class Kafka:
    """librdkafka's mock cluster in a process of its own (pinned to --broker-cpu); one topic
    of 4 partitions filled once, a new consumer group per run."""

    MOCK = textwrap.dedent(
        """
        import sys
        from cello._cello import KafkaMockCluster
        cluster = KafkaMockCluster(1)
        cluster.create_topic(sys.argv[1], 4)
        print(cluster.bootstrap_servers(), flush=True)
        sys.stdin.read()
        """
    )

    def __init__(self, n: int, cpu: str | None) -> None:
        self.n, self.topic = n, f"bench.{uuid.uuid4().hex[:8]}"
        self.proc = subprocess.Popen([*taskset(cpu), sys.executable, "-c", self.MOCK, self.topic],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)  # fmt: skip
        self.brokers = self.proc.stdout.readline().strip()
        if not self.brokers:
            raise SystemExit("the Kafka mock cluster did not start")
        import confluent_kafka

        p = confluent_kafka.Producer({"bootstrap.servers": self.brokers, "linger.ms": 5, "acks": "all"})
        for i in range(n):
            while True:
                try:
                    p.produce(self.topic, body(i), key=f"k{i % 64}")
                    break
                except BufferError:
                    p.poll(0.1)
        if p.flush(60):
            raise SystemExit("Kafka: the fill was not acknowledged")

    def prepare(self) -> dict:
        return {"source": self.topic, "group": f"g-{uuid.uuid4().hex[:8]}"}

    def cello_env(self, r: dict) -> dict:
        return {"BENCH_BROKERS": self.brokers, "BENCH_GROUP": r["group"]}

    def peer_args(self, r: dict, batch: int) -> list[str]:
        return [self.brokers, r["group"], str(batch)]

    def acked(self, r: dict) -> int:
        import confluent_kafka

        c = confluent_kafka.Consumer({"bootstrap.servers": self.brokers, "group.id": r["group"]})
        try:
            parts = [confluent_kafka.TopicPartition(self.topic, p) for p in range(4)]
            return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
        finally:
            c.close()

    def close(self) -> None:
        stop(self.proc, signal.SIGKILL)


class Rabbit:
    """A durable queue filled anew (persistent messages) before each run; deleted after."""

    def __init__(self, n: int, cpu: str | None) -> None:
        import pika

        self.n, self.pika = n, pika
        self.conn = pika.BlockingConnection(pika.URLParameters(AMQP))
        self.ch = self.conn.channel()
        self.queues: list[str] = []

    def prepare(self) -> dict:
        q = f"bench.{uuid.uuid4().hex[:8]}"
        self.queues.append(q)
        self.ch.queue_declare(q, durable=True)
        props = self.pika.BasicProperties(delivery_mode=2, content_type="application/json")
        for i in range(self.n):
            self.ch.basic_publish("", q, body(i), props)
        wait_until(lambda: self.depth(q) == self.n, 60, f"RabbitMQ: {self.n} messages in {q}")
        return {"source": q}

    def depth(self, q: str) -> int:
        return self.ch.queue_declare(q, passive=True).method.message_count

    def cello_env(self, r: dict) -> dict:
        return {"BENCH_URL": AMQP}

    def peer_args(self, r: dict, batch: int) -> list[str]:
        return [AMQP, str(batch)]

    def acked(self, r: dict) -> int:
        # Unacknowledged deliveries go back to the queue when the consumer leaves.
        return self.n - self.depth(r["source"])

    def close(self) -> None:
        for q in self.queues:
            with contextlib.suppress(Exception):
                self.ch.queue_delete(q)
        with contextlib.suppress(Exception):
            self.conn.close()


class Sqs:
    """A moto server (pinned to --broker-cpu); a new queue filled before each run."""

    def __init__(self, n: int, cpu: str | None) -> None:
        import boto3
        import httpx

        exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        port = free_port()
        self.log = Path(tempfile.mkdtemp(prefix="msgbench-moto-")) / "moto.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*taskset(cpu), exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.endpoint = f"http://127.0.0.1:{port}"

        def up() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(self.endpoint + "/moto-api/", timeout=1)
                return True
            return False

        wait_until(up, 30, f"moto_server on {self.endpoint}")
        self.n = n
        self.client = boto3.client("sqs", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip

    def prepare(self) -> dict:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        url = self.client.create_queue(QueueName=name)["QueueUrl"]
        self.client.create_queue(QueueName=f"{name}-dead")  # what cello's consumer looks for
        for start in range(0, self.n, 10):
            entries = [{"Id": str(i), "MessageBody": body(i).decode()} for i in range(start, min(start + 10, self.n))]
            out = self.client.send_message_batch(QueueUrl=url, Entries=entries)
            if out.get("Failed"):
                raise SystemExit(f"SQS fill failed: {out['Failed']}")
        return {"source": url}

    def cello_env(self, r: dict) -> dict:
        return {"BENCH_ENDPOINT": self.endpoint, **CREDS}

    def peer_args(self, r: dict, batch: int) -> list[str]:
        return [self.endpoint]

    def acked(self, r: dict) -> int:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attrs = self.client.get_queue_attributes(QueueUrl=r["source"], AttributeNames=names)["Attributes"]
        return self.n - sum(int(attrs[k]) for k in names)

    def close(self) -> None:
        stop(self.proc)


class RedisStream:
    """One stream filled once; a new consumer group (from the start) per run."""

    def __init__(self, n: int, cpu: str | None) -> None:
        import redis

        self.n, self.r, self.stream = n, redis.Redis.from_url(REDIS), f"bench:{uuid.uuid4().hex[:8]}"
        for start in range(0, n, 1000):
            pipe = self.r.pipeline(transaction=False)
            for i in range(start, min(start + 1000, n)):
                pipe.xadd(self.stream, {"body": body(i)})
            pipe.execute()

    def prepare(self) -> dict:
        return {"source": self.stream, "group": f"g-{uuid.uuid4().hex[:8]}"}

    def cello_env(self, r: dict) -> dict:
        return {"BENCH_URL": REDIS, "BENCH_GROUP": r["group"]}

    def peer_args(self, r: dict, batch: int) -> list[str]:
        return [REDIS, r["group"], str(batch)]

    def acked(self, r: dict) -> int:
        group = next(g for g in self.r.xinfo_groups(self.stream) if g["name"].decode() == r["group"])
        lag = group.get("lag") or 0
        return self.n - group["pending"] - lag

    def close(self) -> None:
        self.r.delete(self.stream)


BROKERS = {"kafka": Kafka, "rabbitmq": Rabbit, "sqs": Sqs, "redis": RedisStream}


# ---- one run -------------------------------------------------------------------------------------


def run_once(side: str, kind: str, broker, args, timeout: float) -> float:
    r = broker.prepare()
    out = Path(tempfile.mkdtemp(prefix="msgbench-")) / "result.json"
    log = out.with_name("log.txt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLO_")}
    if side == "cello":
        env.update({"BENCH_KIND": kind, "BENCH_N": str(broker.n), "BENCH_OUT": str(out), "BENCH_SOURCE": r["source"],
                    "BENCH_BATCH": str(args.batch), "PYTHONPATH": str(HERE), **broker.cello_env(r)})  # fmt: skip
        cmd = [sys.executable, "-m", "cello", "consume", "cello_app:handle", "--workers", "1", "--admin-port",
               str(free_port()), "--host", "127.0.0.1", "--log-level", "warning"]  # fmt: skip
    else:
        cmd = [args.peer_python, str(HERE / "peers.py"), kind, str(broker.n), str(out), r["source"],
               *broker.peer_args(r, args.batch)]  # fmt: skip
    with open(log, "wb") as f:
        proc = subprocess.Popen([*taskset(args.cpu), *cmd], cwd=HERE, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    def finished() -> bool:
        if proc.poll() is not None and not out.exists():
            raise SystemExit(f"{side} {kind} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        return out.exists() and out.stat().st_size > 0

    try:
        wait_until(finished, timeout, f"{side} {kind}: {broker.n} messages")
        seconds = json.loads(out.read_text())["seconds"]
    finally:
        # cello: SIGTERM drains (in-flight settled, Kafka offsets committed); the peer exits by itself.
        code = stop(proc) if side == "cello" else proc.wait(60)
    if code != 0:
        raise SystemExit(f"{side} {kind} exited with {code}:\n{log.read_text()[-3000:]}")
    deadline = time.monotonic() + 15
    while (acked := broker.acked(r)) != broker.n:
        if time.monotonic() > deadline:
            raise SystemExit(f"{side} {kind}: {acked} of {broker.n} messages acknowledged:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return broker.n / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("brokers", nargs="*", default=list(BROKERS), choices=list(BROKERS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, help="messages per run (default: 50k Kafka/Redis, 20k RabbitMQ, 2k SQS)")
    ap.add_argument("--batch", type=int, default=100, help="fetch batch / prefetch / concurrency (SQS: 10 per receive)")
    ap.add_argument("--cpu", default="0", help="CPU the consumer process is pinned to ('' for none)")
    ap.add_argument("--broker-cpu", default="1", help="CPU of the mock Kafka cluster and moto ('' for none)")
    ap.add_argument("--peer-python", default=os.path.expanduser("~/.cache/cello/msgbench-peers/bin/python"))
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    results: dict = {}
    for kind in args.brokers:
        n = args.n or DEFAULT_N[kind]
        print(f"{kind}: filling {n} messages ...", file=sys.stderr, flush=True)
        broker = BROKERS[kind](n, args.broker_cpu)
        rates: dict[str, list[float]] = {"cello": [], "peer": []}
        try:
            for rep in range(args.reps):
                order = ("cello", "peer") if rep % 2 == 0 else ("peer", "cello")
                for side in order:
                    rate = run_once(side, kind, broker, args, args.timeout)
                    rates[side].append(rate)
                    print(f"  {kind} rep {rep + 1} {side}: {rate:,.0f} msg/s", file=sys.stderr, flush=True)
        finally:
            broker.close()
        results[kind] = {"n": n, **rates}
    print("\n| broker | N | Cello msg/s (median, min–max) | peer msg/s (median, min–max) | × peer |")
    print("|---|---:|---:|---:|---:|")
    peers = {"kafka": "aiokafka", "rabbitmq": "aio-pika", "sqs": "boto3 (thread)", "redis": "redis-py asyncio"}
    for kind, res in results.items():
        c, p = statistics.median(res["cello"]), statistics.median(res["peer"])
        print(f"| {kind} ({peers[kind]}) | {res['n']:,} | {c:,.0f} ({min(res['cello']):,.0f}–{max(res['cello']):,.0f}) "
              f"| {p:,.0f} ({min(res['peer']):,.0f}–{max(res['peer']):,.0f}) | {c / p:.2f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
