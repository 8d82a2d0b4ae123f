"""Issue 15: message consumers inside ``cello run`` beside HTTP (``app.enable_messaging``) and
the W3C trace context in message headers, black-box: a real ``cello run`` process, a producer
process (or an HTTP request that produces), the real RabbitMQ (127.0.0.1:5672) or a
``redis-server`` this test starts (so it can kill it), and the project's OTLP test receiver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pika
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port
from db_helpers import missing, port_open, require
from otlp_receiver import GrpcReceiver

__all__ = ["cello_procs"]
pytestmark = pytest.mark.timeout(90)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
SPAN_PRODUCER, SPAN_CONSUMER, SPAN_SERVER = 4, 5, 2  # OTLP SpanKind

APP = textwrap.dedent(
    """
    import asyncio, os
    from cello import App
    from cello.config import HealthCheckConfig, OpenTelemetryConfig, RabbitMQConfig, RedisConfig
    from cello.messaging import Producer, rabbitmq_consumer, redis_consumer

    KIND, Q, OUT, BROKER = os.environ["KIND"], os.environ["Q"], os.environ["OUT"], os.environ["BROKER"]
    SLEEP = float(os.environ.get("SLEEP", "0"))
    app = App()
    app.enable_prometheus()
    app.enable_health_checks(HealthCheckConfig(include_details=True, timeout_secs=2))
    if os.environ.get("OTLP"):
        app.enable_telemetry(OpenTelemetryConfig(service_name="msgapp", otlp_endpoint=os.environ["OTLP"]),
                             protocol="grpc")
    startup = float(os.environ.get("STARTUP", "10"))

    def record(line):
        with open(OUT, "a") as f:
            f.write(line + "\\n")

    async def work(message):
        n = message.json()["n"]
        record(f"start {n} {os.getpid()}")
        if SLEEP:
            await asyncio.sleep(SLEEP)
        record(f"done {n} {os.getpid()} {message.headers.get('traceparent')}")

    if KIND == "rabbitmq":
        config = RabbitMQConfig(url=BROKER, connection_timeout_secs=1)
        app.enable_rabbitmq(config, startup_timeout=startup)
        handle = rabbitmq_consumer(Q, prefetch=int(os.environ.get("PREFETCH", "4")))(work)
    else:
        config = RedisConfig(url=BROKER, connection_timeout_secs=1)
        app.enable_messaging(config, startup_timeout=startup)
        handle = redis_consumer(Q, group="g")(work)

    producer = None

    @app.get("/ping")
    async def ping(request):
        return {"pid": os.getpid()}

    @app.post("/orders/{n}")
    async def order(request, n: int):
        global producer
        if producer is None:
            producer = await Producer.connect(config)
        await producer.send(Q, {"n": n})
        return {"sent": n}
    """
)

PRODUCER = textwrap.dedent(
    """
    import asyncio, json, sys
    from cello.config import RabbitMQConfig
    from cello.messaging import Producer

    async def main():
        url, queue, payloads = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        p = await Producer.connect(RabbitMQConfig(url=url))
        await p.declare_queue(queue)
        await p.send_batch([(queue, d) for d in payloads])
        print("sent", len(payloads))

    asyncio.run(main())
    """
)


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "mapp.py").write_text(APP)
    (tmp_path / "producer.py").write_text(PRODUCER)
    return tmp_path


@pytest.fixture
def queue():
    require(5672, "RabbitMQ")
    name = f"msgapp.{uuid.uuid4().hex[:10]}"
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    for q in (name, name + ".dead"):
        ch.queue_delete(q)
    ch.exchange_delete(name + ".dead")
    conn.close()


def queue_depth(name: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return conn.channel().queue_declare(name, passive=True).method.message_count
    finally:
        conn.close()


def produce(cello_procs, app_dir, queue, payloads):
    proc = cello_procs.start([AMQP_URL, queue, json.dumps(payloads)], script=app_dir / "producer.py", cwd=app_dir)
    assert proc.wait(20) == 0, proc.log()


def serve(cello_procs, app_dir, env, *extra, workers=1):
    port = free_port()
    e = {"OUT": str(app_dir / "out.txt"), **env}
    proc = cello_procs.start(["run", "mapp:app", "--port", str(port), "--workers", str(workers), *extra],
                             cwd=app_dir, env=e, port=port)  # fmt: skip
    resp = proc.wait_http("/health/ready", timeout=30)
    assert resp.status_code == 200, resp.text
    return proc


def lines(app_dir, word):
    path = app_dir / "out.txt"
    text = path.read_text() if path.exists() else ""
    return [ln.split(" ", 1)[1] for ln in text.splitlines() if ln.startswith(word + " ")]


def done_numbers(app_dir):
    return {int(x.split()[0]) for x in lines(app_dir, "done")}


def wait_for(check, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} not reached within {timeout} s")


def rabbit_env(queue, **extra):
    return {"KIND": "rabbitmq", "Q": queue, "BROKER": AMQP_URL, **extra}


def test_rabbitmq_consumers_run_in_every_http_worker(cello_procs, app_dir, queue):
    proc = serve(cello_procs, app_dir, rabbit_env(queue, SLEEP="0.1"), workers=2)
    dest = f'messaging_system="rabbitmq",messaging_destination_name="{queue}"'

    def metrics_with(line):
        return lambda: (text := httpx.get(proc.url("/metrics")).text) and line in text and text

    wait_for(metrics_with(f"cello_messaging_consumers_connected{{{dest}}} 2"), what="a consumer in each worker")
    produce(cello_procs, app_dir, queue, [{"n": i} for i in range(20)])  # a producer process
    wait_for(lambda: done_numbers(app_dir) == set(range(20)), what="every message handled")
    assert len({x.split()[1] for x in lines(app_dir, "done")}) == 2, "both HTTP workers consumed"
    assert httpx.get(proc.url("/ping")).status_code == 200  # the routes work beside the consumers
    # An HTTP request that produces: its message is consumed by a worker of the same app.
    assert httpx.post(proc.url("/orders/100")).json() == {"sent": 100}
    wait_for(lambda: 100 in done_numbers(app_dir), what="the message sent by a request handled")
    text = wait_for(metrics_with(f"cello_messaging_messages_acked_total{{{dest}}} 21"),
                    what="the acked count of both workers in /metrics")  # fmt: skip
    assert f"cello_messaging_process_duration_seconds_count{{{dest}}} 21" in text, text
    assert httpx.get(proc.url("/health/ready")).json()["checks"]["messaging"]["status"] == "UP"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0, proc.log()
    assert queue_depth(queue) == 0


def test_sigterm_stops_fetching_and_drains_in_flight_messages(cello_procs, app_dir, queue):
    produce(cello_procs, app_dir, queue, [{"n": i} for i in range(6)])
    proc = serve(cello_procs, app_dir, rabbit_env(queue, SLEEP="1.5", PREFETCH="3"))
    wait_for(lambda: len(lines(app_dir, "start")) == 3, what="three handlers running")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0, proc.log()
    assert len(lines(app_dir, "start")) == 3  # nothing fetched after the signal
    assert len(done_numbers(app_dir)) == 3  # the in-flight three finished
    assert queue_depth(queue) == 3  # and were acknowledged; the rest waits for the next consumer


def test_unreachable_broker_fails_the_startup(cello_procs, app_dir):
    dead = free_port()
    env = {"KIND": "rabbitmq", "Q": "msgapp.none", "BROKER": f"amqp://guest:guest@127.0.0.1:{dead}/%2f",
           "OUT": str(app_dir / "out.txt"), "STARTUP": "1"}  # fmt: skip
    t0 = time.monotonic()
    code, log = cello_procs.run(["run", "mapp:app", "--port", str(free_port())], cwd=app_dir, env=env, timeout=30)
    assert code == 3, log
    assert "failed to start" in log and "BrokerUnavailable" in log and "unreachable for 1 s" in log, log
    assert time.monotonic() - t0 < 20


def test_a_module_without_consumers_fails_the_startup(cello_procs, tmp_path):
    (tmp_path / "empty.py").write_text("from cello import App\napp = App()\napp.enable_messaging()\n")
    code, log = cello_procs.run(["run", "empty:app", "--port", str(free_port())], cwd=tmp_path)
    assert code == 3, log
    assert "declares no consumer" in log, log


class RedisServer:
    """A redis-server of this test's own on a free port (so the test can kill it)."""

    def __init__(self, tmp_path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed")
        self.binary, self.dir, self.port = binary, tmp_path, free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for(lambda: port_open(self.port), what="redis-server listening")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def test_redis_consumer_beside_http_and_ready_503_while_the_broker_is_down(cello_procs, app_dir, redis_server):
    env = {"KIND": "redis", "Q": "orders", "BROKER": f"redis://127.0.0.1:{redis_server.port}"}
    proc = serve(cello_procs, app_dir, env)
    for n in range(3):  # produced by HTTP requests, consumed beside them
        assert httpx.post(proc.url(f"/orders/{n}")).status_code == 200
    wait_for(lambda: done_numbers(app_dir) == {0, 1, 2}, what="the messages handled")
    redis_server.kill()
    resp = wait_for(lambda: (r := httpx.get(proc.url("/health/ready"))).status_code == 503 and r,
                    what="/health/ready 503 with the broker down")  # fmt: skip
    check = resp.json()["checks"]["messaging"]
    assert check["status"] == "DOWN" and "disconnected" in check["detail"], resp.text
    assert httpx.get(proc.url("/ping")).status_code == 200  # HTTP goes on
    redis_server.start()  # the same port: the consumer reconnects and is ready again
    wait_for(lambda: httpx.get(proc.url("/health/ready")).status_code == 200, timeout=30,
             what="/health/ready 200 after the broker came back")  # fmt: skip
    # The request's producer finds its connection broken once (BrokerUnavailable, a 500), then
    # reconnects: the consumer is fed again.
    wait_for(lambda: httpx.post(proc.url("/orders/3")).status_code == 200, what="the producer reconnected")
    wait_for(lambda: 3 in done_numbers(app_dir), what="a message after the reconnect handled")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0, proc.log()


def test_trace_context_travels_from_the_request_to_the_consumer_span(cello_procs, app_dir, queue):
    receiver = GrpcReceiver()
    try:
        env = rabbit_env(queue, OTLP=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="100")
        proc = serve(cello_procs, app_dir, env)
        assert httpx.post(proc.url("/orders/7")).status_code == 200
        wait_for(lambda: 7 in done_numbers(app_dir), what="the message handled")
        server = receiver.wait_for(lambda s: s["name"] == "POST /orders/{n}")[0]
        publish = receiver.wait_for(lambda s: s["name"] == f"{queue} publish")[0]
        process = receiver.wait_for(lambda s: s["name"] == f"{queue} process")[0]
        # One trace: request -> publish (PRODUCER, child of the server span) -> process
        # (CONSUMER, child of the publish span, whose context came in the message headers).
        assert publish["trace_id"] == server["trace_id"] == process["trace_id"]
        assert publish["kind"] == SPAN_PRODUCER and publish["parent_span_id"] == server["span_id"]
        assert process["kind"] == SPAN_CONSUMER and process["parent_span_id"] == publish["span_id"]
        header = lines(app_dir, "done")[0].split()[2]
        assert header == f"00-{server['trace_id']}-{publish['span_id']}-01"
        attrs = process["attributes"]
        assert attrs["messaging.system"] == "rabbitmq"
        assert attrs["messaging.destination.name"] == queue
        assert attrs["messaging.operation"] == "process" and attrs["messaging.operation.type"] == "process"
        assert publish["attributes"]["messaging.destination.name"] == queue
        assert process["start"] >= publish["start"]
        # An unsampled caller (flags 00): its trace travels in the message, nothing is exported.
        unsampled = "4bf92f3577b34da6a3ce929d0e0e4736"
        resp = httpx.post(proc.url("/orders/8"), headers={"traceparent": f"00-{unsampled}-00f067aa0ba902b7-00"})
        assert resp.status_code == 200
        wait_for(lambda: 8 in done_numbers(app_dir), what="the unsampled message handled")
        header = next(x for x in lines(app_dir, "done") if x.startswith("8 ")).split()[2]
        assert header.startswith(f"00-{unsampled}-") and header.endswith("-00"), header
        assert httpx.post(proc.url("/orders/9")).status_code == 200
        receiver.wait_for(lambda s: s["name"] == f"{queue} process" and s["trace_id"] != server["trace_id"])
        assert not [s for s in receiver.spans if s["trace_id"] == unsampled]
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0, proc.log()
    finally:
        receiver.stop()


def test_a_config_of_another_broker_is_refused():
    from cello import App
    from cello.config import RedisConfig

    with pytest.raises(TypeError, match=r"enable_rabbitmq\(\) takes a RabbitMQConfig, not RedisConfig"):
        App().enable_rabbitmq(RedisConfig())


def test_the_apps_kafka_config_reaches_its_consumers(cello_procs, tmp_path):
    """`enable_messaging(KafkaConfig)` gives the brokers of a consumer that named none: here an
    unreachable one, which fails the startup naming it (exit 3)."""
    (tmp_path / "kapp.py").write_text(textwrap.dedent(
        """
        from cello import App
        from cello.config import KafkaConfig
        from cello.messaging import kafka_consumer

        app = App()
        app.enable_messaging(KafkaConfig(brokers=["127.0.0.1:9"]), startup_timeout=2)


        @kafka_consumer("orders")
        def handle(message):
            return None
        """
    ))  # fmt: skip
    code, log = cello_procs.run(["run", "kapp:app", "--port", str(free_port())], cwd=tmp_path)
    assert code == 3, log
    assert "BrokerUnavailable" in log and "127.0.0.1:9" in log, log


CONSUMER_WITH_TELEMETRY = textwrap.dedent(
    """
    import os
    from cello import App
    from cello.config import OpenTelemetryConfig
    from cello.messaging import rabbitmq_consumer

    app = App()
    config = OpenTelemetryConfig(service_name="consumer", otlp_endpoint=os.environ["OTLP"])
    app.enable_telemetry(config, protocol="grpc")


    @rabbitmq_consumer(os.environ["Q"], url=os.environ["BROKER"])
    async def handle(message):
        with open(os.environ["OUT"], "a") as f:
            f.write(message.text + "\\n")
    """
)


def test_cello_consume_exports_consumer_spans_with_the_apps_telemetry(cello_procs, tmp_path, queue):
    """`cello consume` of a module whose App has `enable_telemetry`: each handler call is a
    CONSUMER span continuing the trace the message carries, exported over OTLP by the worker."""
    import pika

    receiver = GrpcReceiver()
    try:
        (tmp_path / "capp.py").write_text(CONSUMER_WITH_TELEMETRY)
        port = free_port()
        env = {"Q": queue, "BROKER": AMQP_URL, "OUT": str(tmp_path / "out.txt"), "OTLP": receiver.endpoint,
               "OTEL_BSP_SCHEDULE_DELAY": "100"}  # fmt: skip
        proc = cello_procs.start(["consume", "capp:handle", "--admin-port", str(port)], cwd=tmp_path, env=env,
                                 port=port)  # fmt: skip
        assert proc.wait_http("/health/ready", timeout=30).status_code == 200
        trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        props = pika.BasicProperties(headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        conn.channel().basic_publish("", queue, b"traced", properties=props)
        conn.close()
        span = receiver.wait_for(lambda s: s["name"] == f"{queue} process")[0]
        assert span["kind"] == SPAN_CONSUMER
        assert span["trace_id"] == trace_id and span["parent_span_id"] == parent
        assert span["attributes"]["messaging.system"] == "rabbitmq"
        assert span["resource"]["service.name"] == "consumer"
        assert (tmp_path / "out.txt").read_text() == "traced\n"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0, proc.log()
    finally:
        receiver.stop()
