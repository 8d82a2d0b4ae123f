"""Issue 15: ``cello.messaging`` on RabbitMQ, black-box — a producer process, a ``cello consume``
process and the real RabbitMQ on 127.0.0.1:5672 (guest/guest) between them, checked with pika.
Queues are ``msgtest.<random>`` and deleted afterwards.

Publisher confirms, prefetch, ack after the handler (SIGKILL mid-batch loses nothing), retries
then the dead-letter exchange with the error in the headers, SIGTERM drain, the queue binding."""

from __future__ import annotations

import json
import os
import signal
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
from db_helpers import Loop, require

__all__ = ["cello_procs"]
pytestmark = pytest.mark.timeout(60)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"

APP = textwrap.dedent(
    """
    import asyncio, os
    from cello.messaging import MessageResult, rabbitmq_consumer

    Q = os.environ["Q"]
    OUT = os.environ["OUT"]
    SLEEP = float(os.environ.get("SLEEP", "0"))
    tries = {}

    def record(line):
        with open(OUT, "a") as f:
            f.write(line + "\\n")

    @rabbitmq_consumer(Q, prefetch=int(os.environ.get("PREFETCH", "4")), max_retries=2, retry_backoff_secs=0.05)
    async def handle(message):
        data = message.json()
        record("start " + str(data["n"]))
        if SLEEP:
            await asyncio.sleep(SLEEP)
        tries[data["n"]] = tries.get(data["n"], 0) + 1
        if data.get("fail"):
            raise ValueError("bad order " + str(data["n"]))
        if data.get("result"):
            return MessageResult[data["result"]]
        record(f'done {data["n"]} {message.delivery_count} {message.key} {message.headers.get("h")}')
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
        first, rest = payloads[:1], payloads[1:]
        for d in first:
            await p.send(queue, d, key="k" + str(d["n"]), headers={"h": "v"})
        await p.send_batch([(queue, d) for d in rest])
        print("sent", len(payloads))
        await p.close()

    asyncio.run(main())
    """
)


@pytest.fixture
def channel():
    # Per test: a blocking pika connection does not answer heartbeats while a test waits.
    require(5672, "RabbitMQ")
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    yield ch
    conn.close()


@pytest.fixture
def queue(channel):
    name = f"msgtest.{uuid.uuid4().hex[:10]}"
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    for q in (name, name + ".dead"):
        ch.queue_delete(q)
    ch.exchange_delete(name + ".dead")
    conn.close()


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "rapp.py").write_text(APP)
    (tmp_path / "producer.py").write_text(PRODUCER)
    return tmp_path


def produce(cello_procs, app_dir, queue, payloads):
    proc = cello_procs.start([AMQP_URL, queue, json.dumps(payloads)], script=app_dir / "producer.py", cwd=app_dir)
    assert proc.wait(20) == 0, proc.log()
    assert f"sent {len(payloads)}" in proc.log()


def consume(cello_procs, app_dir, queue, *extra, env=None, target="rapp:handle"):
    port = free_port()
    e = {"Q": queue, "OUT": str(app_dir / "out.txt"), **(env or {})}
    proc = cello_procs.start(["consume", target, "--admin-port", str(port), *extra], cwd=app_dir, env=e, port=port)
    resp = proc.wait_http("/health/ready")
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


def queue_depth(channel, name):
    return channel.queue_declare(name, passive=True).method.message_count


def test_ack_retry_dead_letter_exchange_and_admin_port(cello_procs, app_dir, channel, queue):
    payloads = [{"n": i} for i in range(10)] + [{"n": 10, "fail": True}]
    produce(cello_procs, app_dir, queue, payloads)
    assert queue_depth(channel, queue) == 11  # confirmed: all in the queue before send returned
    proc = consume(cello_procs, app_dir, queue)
    wait_for(lambda: done_numbers(app_dir) == set(range(10)), what="all good messages handled")
    wait_for(lambda: queue_depth(channel, queue + ".dead") == 1, what="the dead letter")
    method, props, body = channel.basic_get(queue + ".dead", auto_ack=True)
    assert json.loads(body) == {"n": 10, "fail": True}
    assert props.headers["x-error"] == "ValueError: bad order 10"
    assert props.headers["x-delivery-count"] == "3"  # max_retries=2: three attempts
    first = next(x for x in lines(app_dir, "done") if x.startswith("0 "))
    assert first == "0 1 k0 v"  # key and headers travel; first delivery
    metrics = httpx.get(proc.url("/metrics")).text
    dest = f'messaging_system="rabbitmq",messaging_destination_name="{queue}"'
    assert f"cello_messaging_messages_acked_total{{{dest}}} 10" in metrics, metrics
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(15) == 0, proc.log()
    assert queue_depth(channel, queue) == 0  # everything acknowledged


def test_sigkill_mid_batch_loses_nothing(cello_procs, app_dir, channel, queue):
    n = 20
    produce(cello_procs, app_dir, queue, [{"n": i} for i in range(n)])
    proc = consume(cello_procs, app_dir, queue, env={"SLEEP": "0.3"})
    wait_for(lambda: len(lines(app_dir, "done")) >= 4, what="some messages handled")
    proc.kill()
    assert len(done_numbers(app_dir)) < n
    consume(cello_procs, app_dir, queue, env={"SLEEP": "0.01"})
    wait_for(lambda: done_numbers(app_dir) == set(range(n)), timeout=30, what="every message handled")
    redelivered = [x for x in lines(app_dir, "done") if x.split()[1] != "1"]
    assert redelivered, "the killed worker's unacknowledged messages came back flagged as redelivered"
    wait_for(lambda: queue_depth(channel, queue) == 0, what="queue drained")


def test_prefetch_bounds_in_flight_and_sigterm_drains(cello_procs, app_dir, channel, queue):
    produce(cello_procs, app_dir, queue, [{"n": i} for i in range(6)])
    proc = consume(cello_procs, app_dir, queue, env={"SLEEP": "1.5", "PREFETCH": "3"})
    wait_for(lambda: len(lines(app_dir, "start")) == 3, what="three handlers running")
    time.sleep(0.3)
    assert len(lines(app_dir, "start")) == 3  # prefetch 3: the other three wait in the broker
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(15) == 0, proc.log()
    assert len(done_numbers(app_dir)) == 3  # the in-flight three finished and were acknowledged
    assert queue_depth(channel, queue) == 3  # the rest stays for the next consumer


def test_results_reject_and_requeue(cello_procs, app_dir, channel, queue):
    produce(cello_procs, app_dir, queue, [{"n": 1, "result": "REJECT"}, {"n": 2, "result": "DEAD_LETTER"}])
    consume(cello_procs, app_dir, queue)
    # REJECT: RabbitMQ dead-letters it itself (no x-error); DEAD_LETTER: ours, with x-error.
    wait_for(lambda: queue_depth(channel, queue + ".dead") == 2, what="both dead-lettered")
    errors = set()
    for _ in range(2):
        _, props, _ = channel.basic_get(queue + ".dead", auto_ack=True)
        errors.add((props.headers or {}).get("x-error"))
    assert errors == {None, "dead-lettered by the handler"}


def test_queue_binding_and_unreachable_broker(cello_procs, app_dir, channel, queue):
    env = {"CELLO_QUEUES": "jobs", "CELLO_QUEUE_JOBS_KIND": "rabbitmq", "CELLO_QUEUE_JOBS_URL": AMQP_URL,
           "CELLO_QUEUE_JOBS_QUEUE": queue}  # fmt: skip
    produce(cello_procs, app_dir, queue, [{"n": 7}])
    proc = consume(cello_procs, app_dir, "ignored-by-binding", "--queue", "jobs", env=env)
    wait_for(lambda: done_numbers(app_dir) == {7}, what="the bound queue consumed")
    proc.kill()
    dead = free_port()
    env["CELLO_QUEUE_JOBS_URL"] = f"amqp://guest:guest@127.0.0.1:{dead}/%2f"
    code, log = cello_procs.run(
        ["consume", "rapp:handle", "--queue", "jobs", "--admin-port", str(free_port()), "--startup-timeout", "1"],
        cwd=app_dir,
        env={"Q": queue, "OUT": str(app_dir / "out.txt"), **env},
    )
    assert code == 3, log
    assert "failed to start" in log and f"127.0.0.1:{dead}" in log, log


def test_manual_api(channel, queue):
    from cello.config import RabbitMQConfig
    from cello.messaging import Consumer, Producer

    loop = Loop()
    try:

        async def go():
            p = await Producer.connect(RabbitMQConfig(url=AMQP_URL))
            await p.declare_queue(queue)
            await p.send(queue, {"a": 1}, headers={"x": "y"})
            c = await Consumer.connect(RabbitMQConfig(url=AMQP_URL))
            await c.subscribe(queue)
            m = await c.poll(2000)
            assert m.json() == {"a": 1} and m.headers == {"x": "y"} and m.queue == queue
            await c.commit(m)
            assert await c.poll(100) is None
            await c.close()
            await p.close()

        loop.run(go())
    finally:
        loop.close()
    assert queue_depth(channel, queue) == 0
