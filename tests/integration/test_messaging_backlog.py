"""Issue 15: the backlog gauges of ``cello.messaging`` — Kafka consumer lag and the queue depth
of RabbitMQ, SQS and Redis — black-box over the real brokers: a ``cello consume`` process (or a
``cello run`` app with ``enable_messaging``) whose handler waits behind a gate file, messages
published with an independent client (pika, confluent-kafka, boto3, redis-py), ``/metrics``
scraped until the gauge shows the backlog, the gate opened, the gauge scraped until it is 0.

Brokers: RabbitMQ 127.0.0.1:5672 and Redis 127.0.0.1:6379 (shared: names are random), the
librdkafka mock cluster and a moto SQS server, each started once for this module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port
from db_helpers import missing, require

__all__ = ["cello_procs"]
pytestmark = pytest.mark.timeout(90)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
REDIS_URL = "redis://127.0.0.1:6379"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
N = 12

APP = textwrap.dedent(
    """
    import asyncio, os
    from cello.messaging import kafka_consumer, rabbitmq_consumer, redis_consumer, sqs_consumer

    KIND, Q, GATE, OUT, BROKER = (os.environ[k] for k in ("KIND", "Q", "GATE", "OUT", "BROKER"))

    async def work(message):
        while not os.path.exists(GATE):  # held until the test opens the gate
            await asyncio.sleep(0.05)
        with open(OUT, "a") as f:
            f.write(message.text + "\\n")

    # One message in a handler at a time: what the broker holds back is known exactly.
    if KIND == "rabbitmq":
        handle = rabbitmq_consumer(Q, prefetch=1, url=BROKER)(work)
    elif KIND == "kafka":
        handle = kafka_consumer(Q, brokers=BROKER, concurrency=1)(work)
    elif KIND == "sqs":
        handle = sqs_consumer(Q, endpoint_url=BROKER, concurrency=1, batch_size=1, wait_time_secs=1)(work)
    elif KIND == "redis-list":
        handle = redis_consumer(Q, url=BROKER, concurrency=1, batch_size=1)(work)
    else:
        handle = redis_consumer(Q, group="g", url=BROKER, concurrency=1, batch_size=1)(work)

    if os.environ.get("HTTP"):
        from cello import App

        app = App()
        app.enable_prometheus()
        app.enable_health_checks()
        app.enable_messaging(metrics_interval_secs=0.3)
    """
)

MOCK = textwrap.dedent(
    """
    import sys
    from cello._cello import KafkaMockCluster

    cluster = KafkaMockCluster(1)
    print(cluster.bootstrap_servers(), flush=True)
    for line in sys.stdin:  # "topic partitions": create it
        name, partitions = line.split()
        cluster.create_topic(name, int(partitions))
        print("ok", flush=True)
    """
)


@pytest.fixture(scope="module")
def kafka():
    """The mock cluster's process: ``(bootstrap servers, create_topic)``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MOCK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        servers = proc.stdout.readline().strip()
        assert servers, "the mock cluster did not start"

        def create_topic(name: str, partitions: int) -> None:
            proc.stdin.write(f"{name} {partitions}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "ok"

        yield servers, create_topic
    finally:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not os.path.exists(exe):
        missing("moto_server (moto[server] of requirements-dev.txt) is not installed")
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start on {url}: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


class Broker:
    """One broker kind: where it is, a destination of its own, and a publisher."""

    def __init__(self, kind: str, request) -> None:
        self.kind = kind
        self.name = f"backlog-{uuid.uuid4().hex[:10]}"
        self.env = {}
        self.cleanup = []
        if kind == "rabbitmq":
            require(5672, "RabbitMQ")
            self.url, self.system = AMQP_URL, "rabbitmq"
            self.cleanup.append(self._delete_rabbit)
        elif kind == "kafka":
            self.url, create = request.getfixturevalue("kafka")
            create(self.name, 4)
            create(self.name + ".dlq", 1)
            self.system = "kafka"
        elif kind == "sqs":
            import boto3

            endpoint = request.getfixturevalue("moto")
            self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                                    aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
            self.url, self.system, self.env = endpoint, "sqs", CREDS
            self.name = self.sqs.create_queue(QueueName=self.name)["QueueUrl"]
        else:
            require(6379, "Redis")
            import redis

            self.url, self.system = REDIS_URL, "redis"
            self.redis = redis.Redis.from_url(REDIS_URL)
            self.cleanup.append(lambda: self.redis.delete(self.name, self.name + ":dead"))

    def publish(self, n: int) -> None:
        bodies = [f"m{i}" for i in range(n)]
        if self.kind == "rabbitmq":
            import pika

            conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            ch = conn.channel()
            ch.confirm_delivery()
            for b in bodies:
                ch.basic_publish("", self.name, b.encode(), mandatory=True)
            conn.close()
        elif self.kind == "kafka":
            import confluent_kafka

            p = confluent_kafka.Producer({"bootstrap.servers": self.url})
            for i, b in enumerate(bodies):
                p.produce(self.name, b.encode(), key=str(i))
            assert p.flush(10) == 0
        elif self.kind == "sqs":
            for b in bodies:
                self.sqs.send_message(QueueUrl=self.name, MessageBody=b)
        elif self.kind == "redis-list":
            self.redis.lpush(self.name, *bodies)
        else:
            for b in bodies:
                self.redis.xadd(self.name, {"body": b})

    def _delete_rabbit(self) -> None:
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        ch = conn.channel()
        for q in (self.name, self.name + ".dead"):
            ch.queue_delete(q)
        ch.exchange_delete(self.name + ".dead")
        conn.close()


@pytest.fixture
def broker(request):
    b = Broker(request.param, request)
    yield b
    for f in b.cleanup:
        f()


def gauge(text: str, name: str, broker: Broker) -> float | None:
    """The value of ``name`` for ``broker``'s destination in a /metrics text, or None."""
    dest = broker.name.replace("\\", "\\\\").replace('"', '\\"')
    prefix = f'{name}{{messaging_system="{broker.system}",messaging_destination_name="{dest}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


def wait_gauge(url: str, name: str, broker: Broker, want: float, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        text = httpx.get(url, timeout=5).text
        seen = gauge(text, name, broker)
        if seen == want:
            return text
        time.sleep(0.1)
    pytest.fail(f"{name} of {broker.name} is {seen}, not {want}, after {timeout} s")


def handled(out: Path) -> int:
    return len(out.read_text().splitlines()) if out.exists() else 0


def wait_handled(out: Path, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while handled(out) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"{handled(out)} of {n} messages handled after {timeout} s")
        time.sleep(0.05)


def app_env(broker: Broker, tmp_path: Path, **extra) -> dict:
    return {"KIND": broker.kind, "Q": broker.name, "GATE": str(tmp_path / "gate"), "OUT": str(tmp_path / "out.txt"),
            "BROKER": broker.url, **broker.env, **extra}  # fmt: skip


KINDS = ["rabbitmq", "kafka", "sqs", "redis-list", "redis-stream"]


@pytest.mark.parametrize("broker", KINDS, indirect=True)
def test_cello_consume_reports_the_backlog_until_it_drains(cello_procs, tmp_path, broker):
    (tmp_path / "bapp.py").write_text(APP)
    port = free_port()
    args = ["consume", "bapp:handle", "--admin-port", str(port), "--metrics-interval", "0.3"]
    proc = cello_procs.start(args, cwd=tmp_path, env=app_env(broker, tmp_path), port=port)
    assert proc.wait_http("/health/ready", timeout=30).status_code == 200
    metrics = proc.url("/metrics")
    kafka = broker.kind == "kafka"
    name = "cello_messaging_kafka_consumer_lag" if kafka else "cello_messaging_queue_depth"
    text = wait_gauge(metrics, name, broker, 0)  # known before anything was published
    assert f"# TYPE {name} gauge" in text
    assert gauge(text, "cello_messaging_consumers_connected", broker) == 1
    broker.publish(N)
    # Kafka: nothing is committed while the first message waits; the others: one message is
    # in the handler (concurrency / prefetch 1), the rest waits in the broker.
    wait_gauge(metrics, name, broker, N if kafka else N - 1)
    (tmp_path / "gate").touch()
    wait_handled(tmp_path / "out.txt", N)
    wait_gauge(metrics, name, broker, 0)


@pytest.mark.parametrize("broker", ["rabbitmq", "kafka"], indirect=True)
def test_app_metrics_carry_the_backlog_once_across_workers(cello_procs, tmp_path, broker):
    """Beside HTTP with two workers: Kafka's lag is per worker (its partitions), so /metrics
    adds up to the group's; a queue's depth is reported by one worker, not counted twice."""
    (tmp_path / "bapp.py").write_text(APP)
    port = free_port()
    proc = cello_procs.start(["run", "bapp:app", "--port", str(port), "--workers", "2"], cwd=tmp_path,
                             env=app_env(broker, tmp_path, HTTP="1"), port=port)  # fmt: skip
    assert proc.wait_http("/health/ready", timeout=30).status_code == 200
    metrics = proc.url("/metrics")
    kafka = broker.kind == "kafka"
    name = "cello_messaging_kafka_consumer_lag" if kafka else "cello_messaging_queue_depth"
    wait_gauge(metrics, "cello_messaging_consumers_connected", broker, 2)
    broker.publish(N)
    # RabbitMQ: each worker holds one unacknowledged delivery (prefetch 1).
    wait_gauge(metrics, name, broker, N if kafka else N - 2)
    (tmp_path / "gate").touch()
    wait_handled(tmp_path / "out.txt", N)
    wait_gauge(metrics, name, broker, 0)
