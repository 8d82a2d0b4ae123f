"""Issue 15: ``cello.messaging`` on Amazon SQS, black-box — a producer process, a ``cello consume``
process and a real SQS API between them: a moto server (``moto_server`` of ``moto[server]``,
installed with the dev requirements) that this module starts on 127.0.0.1 on a free port, and
checks with boto3. Every test makes queues of its own.

Messages sent before ``send`` returns (SQS's message id), deleted only after the handler
(SIGKILL mid-batch loses nothing: the messages come back after the visibility timeout),
NACK made visible again and counted by SQS, the retry limit then the dead-letter queue with the
error in its attributes, the redrive policy's queue, visibility extended for a long handler,
SIGTERM drain, ``concurrency=``, the queue binding, exit 3 when SQS is unreachable."""

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
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port
from db_helpers import Loop
from msg_helpers import CREDS, start_moto

__all__ = ["cello_procs"]
pytestmark = pytest.mark.timeout(90)
REGION = "us-east-1"

APP = textwrap.dedent(
    """
    import asyncio, os, time
    from cello.messaging import MessageResult, sqs_consumer

    Q = os.environ["Q"]
    OUT = os.environ["OUT"]
    SLEEP = float(os.environ.get("SLEEP", "0"))

    def record(line):
        with open(OUT, "a") as f:
            f.write(line + "\\n")

    @sqs_consumer(Q, endpoint_url=os.environ.get("ENDPOINT"), concurrency=int(os.environ.get("CONCURRENCY", "10")),
                  visibility_timeout_secs=int(os.environ.get("VT", "2")), max_retries=2, retry_backoff_secs=0)
    async def handle(message):
        data = message.json()
        record("start " + str(data["n"]) + " " + str(message.delivery_count))
        if SLEEP:
            await asyncio.sleep(SLEEP)
        if data.get("fail"):
            raise ValueError("bad order " + str(data["n"]))
        if data.get("result"):
            return MessageResult[data["result"]]
        record(f'done {data["n"]} {message.delivery_count} {message.key} {message.headers.get("h")}')

    @sqs_consumer(Q, endpoint_url=os.environ.get("ENDPOINT"), visibility_timeout_secs=2)
    def handle_sync(message):
        time.sleep(float(os.environ.get("SLEEP", "0")))
        record(f'done {message.json()["n"]} {message.delivery_count} sync')
    """
)

PRODUCER = textwrap.dedent(
    """
    import asyncio, json, sys
    from cello.config import SqsConfig
    from cello.messaging import Producer

    async def main():
        endpoint, queue, payloads = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        p = await Producer.connect(SqsConfig(endpoint_url=endpoint))
        first, rest = payloads[:1], payloads[1:]
        ids = []
        for d in first:
            ids.append(await p.send(queue, d, key="k" + str(d["n"]), headers={"h": "v"}))
        ids += await p.send_batch([(queue, d) for d in rest])
        assert all(ids), ids
        print("sent", len(payloads))
        await p.close()

    asyncio.run(main())
    """
)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    url, proc = start_moto(tmp_path_factory.mktemp("moto"))
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def sqs(endpoint):
    import boto3

    return boto3.client("sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")  # fmt: skip


@pytest.fixture
def queue(sqs):
    return sqs.create_queue(QueueName=f"msgtest-{uuid.uuid4().hex[:10]}")["QueueUrl"]


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "sapp.py").write_text(APP)
    (tmp_path / "producer.py").write_text(PRODUCER)
    return tmp_path


def produce(cello_procs, app_dir, endpoint, queue, payloads):
    proc = cello_procs.start([endpoint, queue, json.dumps(payloads)], script=app_dir / "producer.py", cwd=app_dir,
                             env=CREDS)  # fmt: skip
    assert proc.wait(30) == 0, proc.log()
    assert f"sent {len(payloads)}" in proc.log()


def consume(cello_procs, app_dir, endpoint, queue, *extra, env=None, target="sapp:handle"):
    port = free_port()
    e = {"Q": queue, "OUT": str(app_dir / "out.txt"), "ENDPOINT": endpoint, **CREDS, **(env or {})}
    proc = cello_procs.start(["consume", target, "--admin-port", str(port), *extra], cwd=app_dir, env=e, port=port)
    resp = proc.wait_http("/health/ready", timeout=30)
    assert resp.status_code == 200, resp.text
    return proc


def lines(app_dir, word):
    path = app_dir / "out.txt"
    text = path.read_text() if path.exists() else ""
    return [ln.split(" ", 1)[1] for ln in text.splitlines() if ln.startswith(word + " ")]


def done_numbers(app_dir):
    return {int(x.split()[0]) for x in lines(app_dir, "done")}


def wait_for(check, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} not reached within {timeout} s")


def depth(sqs, url, which="ApproximateNumberOfMessages"):
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[which])["Attributes"][which])


def total(sqs, url):
    return depth(sqs, url) + depth(sqs, url, "ApproximateNumberOfMessagesNotVisible")


def take_all(sqs, url):
    got = []
    for _ in range(20):
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                WaitTimeSeconds=0)  # fmt: skip
        got += r.get("Messages", [])
        if not r.get("Messages"):
            break
    return got


def test_ack_retry_dead_letter_queue_and_admin_port(cello_procs, app_dir, endpoint, sqs, queue):
    payloads = [{"n": i} for i in range(10)] + [{"n": 10, "fail": True}]
    produce(cello_procs, app_dir, endpoint, queue, payloads)
    assert depth(sqs, queue) == 11  # sent: all in the queue before send returned
    proc = consume(cello_procs, app_dir, endpoint, queue)
    wait_for(lambda: done_numbers(app_dir) == set(range(10)), what="all good messages handled")
    dead = sqs.get_queue_url(QueueName=queue.rsplit("/", 1)[1] + "-dead")["QueueUrl"]
    wait_for(lambda: depth(sqs, dead) == 1, what="the dead letter")
    (m,) = take_all(sqs, dead)
    assert json.loads(m["Body"]) == {"n": 10, "fail": True}
    attrs = {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
    assert attrs["x-error"] == "ValueError: bad order 10"
    assert attrs["x-delivery-count"] == "3"  # max_retries=2: three receives, counted by SQS
    assert attrs["x-original-queue"] == queue
    # The failed message came back from SQS each time (visibility reset), not retried in-process.
    assert sorted(x for x in lines(app_dir, "start") if x.startswith("10 ")) == ["10 1", "10 2", "10 3"]
    first = next(x for x in lines(app_dir, "done") if x.startswith("0 "))
    assert first == "0 1 k0 v"  # key and headers (message attributes) travel; first delivery
    metrics = httpx.get(proc.url("/metrics")).text
    dest = f'messaging_system="sqs",messaging_destination_name="{queue}"'
    assert f"cello_messaging_messages_acked_total{{{dest}}} 10" in metrics, metrics
    assert f"cello_messaging_messages_dead_lettered_total{{{dest}}} 1" in metrics, metrics
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(15) == 0, proc.log()
    assert total(sqs, queue) == 0  # everything deleted


def test_sigkill_mid_batch_loses_nothing(cello_procs, app_dir, endpoint, sqs, queue):
    n = 20
    produce(cello_procs, app_dir, endpoint, queue, [{"n": i} for i in range(n)])
    proc = consume(cello_procs, app_dir, endpoint, queue, env={"SLEEP": "0.5", "CONCURRENCY": "4"})
    wait_for(lambda: len(lines(app_dir, "done")) >= 4, what="some messages handled")
    proc.kill()
    assert len(done_numbers(app_dir)) < n
    consume(cello_procs, app_dir, endpoint, queue, env={"SLEEP": "0.01"})
    wait_for(lambda: done_numbers(app_dir) == set(range(n)), timeout=40, what="every message handled")
    redelivered = [x for x in lines(app_dir, "done") if x.split()[1] != "1"]
    assert redelivered, "the killed worker's undeleted messages came back with ApproximateReceiveCount > 1"
    wait_for(lambda: total(sqs, queue) == 0, what="queue drained")


def test_concurrency_bounds_in_flight_visibility_extended_and_sigterm_drains(
    cello_procs, app_dir, endpoint, sqs, queue
):
    produce(cello_procs, app_dir, endpoint, queue, [{"n": i} for i in range(6)])
    # Handlers take 3.5 s, longer than the 2 s visibility timeout: extended while they run.
    proc = consume(cello_procs, app_dir, endpoint, queue, env={"SLEEP": "3.5", "CONCURRENCY": "3"})
    wait_for(lambda: len(lines(app_dir, "start")) == 3, what="three handlers running")
    time.sleep(2.5)  # past the visibility timeout: nothing is delivered twice, nothing more taken
    assert len(lines(app_dir, "start")) == 3, lines(app_dir, "start")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0, proc.log()
    assert len(done_numbers(app_dir)) == 3  # the in-flight three finished and were deleted
    assert all(x.split()[1] == "1" for x in lines(app_dir, "start"))
    wait_for(lambda: depth(sqs, queue) == 3, what="the other three visible for the next consumer")


def test_results_reject_requeue_dead_letter_and_redrive_queue(cello_procs, app_dir, endpoint, sqs):
    name = f"msgtest-{uuid.uuid4().hex[:10]}"
    dlq = sqs.create_queue(QueueName=name + "-redrive")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})
    queue = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy})["QueueUrl"]
    payloads = [{"n": 1, "result": "REJECT"}, {"n": 2, "result": "DEAD_LETTER"}, {"n": 3, "result": "REQUEUE"}]
    produce(cello_procs, app_dir, endpoint, queue, payloads)
    consume(cello_procs, app_dir, endpoint, queue)
    # DEAD_LETTER: to the redrive policy's queue with the error; REJECT: deleted;
    # REQUEUE: visible again at once, so it keeps coming back (counted by SQS).
    wait_for(lambda: depth(sqs, dlq) == 1, what="the dead letter in the redrive queue")
    (m,) = take_all(sqs, dlq)
    assert json.loads(m["Body"])["n"] == 2
    assert m["MessageAttributes"]["x-error"]["StringValue"] == "dead-lettered by the handler"
    wait_for(lambda: any(x.startswith("3 3") for x in lines(app_dir, "start")), what="REQUEUE delivered again")
    assert [x for x in lines(app_dir, "start") if x.startswith("1 ")] == ["1 1"]  # REJECT: gone


def test_sync_handler_queue_binding_and_unreachable_endpoint(cello_procs, app_dir, endpoint, sqs, queue):
    env = {"CELLO_QUEUES": "jobs", "CELLO_QUEUE_JOBS_KIND": "sqs", "CELLO_QUEUE_JOBS_QUEUE_URL": queue,
           "CELLO_QUEUE_JOBS_REGION": REGION, "CELLO_QUEUE_JOBS_ENDPOINT": endpoint,
           "CELLO_QUEUE_JOBS_ACCESS_KEY_ID": "testing", "CELLO_QUEUE_JOBS_SECRET_ACCESS_KEY": "testing",
           "ENDPOINT": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}  # fmt: skip
    produce(cello_procs, app_dir, endpoint, queue, [{"n": 7}])
    # The decorator names another queue and a dead endpoint; the binding gives queue, endpoint, keys.
    proc = consume(cello_procs, app_dir, endpoint, "ignored-by-binding", "--queue", "jobs", env=env,
                   target="sapp:handle_sync")  # fmt: skip
    wait_for(lambda: lines(app_dir, "done") == ["7 1 sync"], what="the bound queue consumed by a def handler")
    proc.kill()
    dead = free_port()
    env["CELLO_QUEUE_JOBS_ENDPOINT"] = f"http://127.0.0.1:{dead}"
    code, log = cello_procs.run(
        ["consume", "sapp:handle", "--queue", "jobs", "--admin-port", str(free_port()), "--startup-timeout", "1"],
        cwd=app_dir,
        env={"Q": queue, "OUT": str(app_dir / "out.txt"), **env},
    )
    assert code == 3, log
    assert "failed to start" in log and f"127.0.0.1:{dead}" in log, log


def test_manual_api(endpoint, sqs, queue, monkeypatch):
    from cello.config import SqsConfig
    from cello.messaging import Consumer, Producer

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    loop = Loop()
    try:

        async def go():
            config = SqsConfig(endpoint_url=endpoint, region=REGION)
            p = await Producer.connect(config)
            mid = await p.send(queue, {"a": 1}, headers={"x": "y"})
            assert mid
            c = await Consumer.connect(config)
            await c.subscribe(queue)
            m = await c.poll(3000)
            assert m.json() == {"a": 1} and m.headers["x"] == "y" and m.queue == queue
            assert m.headers["x-sqs-message-id"] == mid
            await c.commit(m)
            assert await c.poll(100) is None
            await c.close()
            await p.close()

        loop.run(go())
    finally:
        loop.close()
    assert total(sqs, queue) == 0


BATCH_PRODUCER = textwrap.dedent(
    """
    import asyncio, json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from cello.config import SqsConfig
    from cello.messaging import BatchSendError, Producer

    async def main():
        endpoint, queue = sys.argv[1], sys.argv[2]
        trace.set_tracer_provider(TracerProvider())
        p = await Producer.connect(SqsConfig(endpoint_url=endpoint))
        items = [{"topic": queue, "value": {"n": i}, "key": f"k{i}", "headers": {"h": str(i)}} for i in range(25)]
        items[13]["value"] = {"n": 13, "pad": "x" * 2000}  # longer than the queue's 1024 bytes: refused
        items[20]["value"] = b"\\xff"  # not text: an SQS body cannot carry it
        with trace.get_tracer("t").start_as_current_span("parent") as span:
            try:
                await p.send_batch(items)
                print("no error")
            except BatchSendError as exc:
                ids = [r if isinstance(r, str) else None for r in exc.results]
                print(json.dumps({"trace": format(span.get_span_context().trace_id, "032x"), "message": str(exc),
                                  "failed": sorted(exc.failed), "ids": ids}))
            print(json.dumps(await p.send_batch([(queue, {"n": 100 + i}) for i in range(12)])))
        await p.close()

    asyncio.run(main())
    """
)


def test_send_batch_sends_chunks_of_ten_and_names_the_refused_messages(cello_procs, app_dir, endpoint, sqs):
    name = f"msgtest-{uuid.uuid4().hex[:10]}"
    queue = sqs.create_queue(QueueName=name, Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    (app_dir / "batch.py").write_text(BATCH_PRODUCER)
    proc = cello_procs.start([endpoint, queue], script=app_dir / "batch.py", cwd=app_dir, env=CREDS)
    assert proc.wait(60) == 0, proc.log()
    out = proc.log().strip().splitlines()
    report, second = json.loads(out[-2]), json.loads(out[-1])
    # Each refused message is named with why; the other 23 (and the next batch of 12) were sent.
    assert report["failed"] == [13, 20]
    assert "2 of 25 messages were not sent — #13 to " in report["message"]
    assert "shorter than 1024 bytes" in report["message"], report["message"]
    assert "#20 to " in report["message"] and "not UTF-8" in report["message"]
    assert len(second) == 12 and all(second)
    got = take_all(sqs, queue)
    assert len(got) == 23 + 12
    by_n = {json.loads(m["Body"])["n"]: m for m in got}
    assert set(by_n) == (set(range(25)) - {13, 20}) | set(range(100, 112))
    for n in set(range(25)) - {13, 20}:
        m = by_n[n]
        attrs = {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
        assert m["MessageId"] == report["ids"][n]  # the id send_batch returned
        assert attrs["h"] == str(n) and attrs["x-message-key"] == f"k{n}"
        assert attrs["traceparent"].split("-")[1] == report["trace"]
