"""Issue 15: acknowledgements and ``send_batch`` go in batches, against the real brokers.

- Redis streams: ``cello consume`` acknowledges with one ``XACK`` carrying many ids (counted with
  ``MONITOR``), and SIGTERM sends the acks still queued before the process exits.
- SQS (moto, behind a proxy that records each call's action): deletes go as
  ``DeleteMessageBatch`` of up to ten, never ``DeleteMessage``; the same on SIGTERM drain, and
  nothing is delivered again afterwards.
- ``Producer.send_batch`` for Redis (stream and list) and RabbitMQ: one round trip for the whole
  batch (a proxy delays every answer of the broker: one round trip ≈ one delay), and a refused
  message fails alone (``BatchSendError``) while the others are stored."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis as redis_py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port
from db_helpers import REDIS_URL, Loop, require
from msg_helpers import CREDS, DelayProxy, SqsRecorder, start_moto

__all__ = ["cello_procs"]
pytestmark = pytest.mark.timeout(90)
AMQP_URL = "amqp://guest:guest@127.0.0.1:{port}/%2f"

APP = textwrap.dedent(
    """
    import asyncio, os
    from cello.messaging import redis_consumer, sqs_consumer

    SRC, OUT, CONC = os.environ["SRC"], os.environ["OUT"], int(os.environ.get("CONC", "50"))

    def record(line):
        with open(OUT, "a") as f:
            f.write(line + "\\n")

    async def work(message):
        data = message.json()
        record(f"start {data['n']}")
        await asyncio.sleep(data.get("sleep", 0))
        record(f"done {data['n']} {message.delivery_count}")

    if os.environ["KIND"] == "redis":
        handle = redis_consumer(SRC, group="g", url=os.environ["REDIS_URL"], concurrency=CONC, batch_size=CONC,
                                claim_idle_secs=2.0)(work)
    else:
        handle = sqs_consumer(SRC, endpoint_url=os.environ["ENDPOINT"], concurrency=CONC, batch_size=10,
                              visibility_timeout_secs=int(os.environ.get("VT", "4")), wait_time_secs=1)(work)
    """
)


def lines(tmp_path, word):
    path = tmp_path / "out.txt"
    text = path.read_text() if path.exists() else ""
    return [ln.split(" ", 1)[1] for ln in text.splitlines() if ln.startswith(word + " ")]


def done(tmp_path):
    return {int(x.split()[0]) for x in lines(tmp_path, "done")}


def wait_for(check, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} not reached within {timeout} s")


def consume(cello_procs, tmp_path, env):
    (tmp_path / "bapp.py").write_text(APP)
    port = free_port()
    e = {"OUT": str(tmp_path / "out.txt"), **env}
    proc = cello_procs.start(["consume", "bapp:handle", "--admin-port", str(port)], cwd=tmp_path, env=e, port=port)
    resp = proc.wait_http("/health/ready", timeout=30)
    assert resp.status_code == 200, resp.text
    return proc


# ---- Redis streams ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw():
    require(6379, "Redis")
    r = redis_py.Redis.from_url(REDIS_URL, decode_responses=True)
    yield r
    for k in r.scan_iter("msgbatch:*"):
        r.delete(k)
    r.close()


@pytest.fixture
def prefix(raw):
    return f"msgbatch:{uuid.uuid4().hex[:10]}"


class XackMonitor:
    """``MONITOR`` on its own connection: the ids of every ``XACK`` of ``stream``, per command."""

    def __init__(self, stream: str) -> None:
        self.calls: list[list[str]] = []
        self.conn = redis_py.Redis.from_url(REDIS_URL, decode_responses=True)
        self.monitor = self.conn.monitor()
        self.monitor.__enter__()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: str) -> None:
        try:
            for cmd in self.monitor.listen():
                parts = cmd["command"].split(" ")
                if parts[0].upper() == "XACK" and len(parts) > 3 and parts[1] == stream:
                    self.calls.append(parts[3:])
        except Exception:  # noqa: BLE001 - the connection is closed when the test is done
            return

    def close(self) -> None:
        try:
            self.monitor.connection.disconnect()
        finally:
            self.conn.close()


def test_redis_stream_acks_go_in_batches_and_sigterm_flushes_them(cello_procs, tmp_path, raw, prefix):
    stream, n = prefix + ":in", 200
    pipe = raw.pipeline()
    for i in range(n):
        pipe.xadd(stream, {"body": json.dumps({"n": i, "sleep": 0.02})})
    ids = set(pipe.execute())
    mon = XackMonitor(stream)
    try:
        proc = consume(cello_procs, tmp_path, {"KIND": "redis", "SRC": stream, "REDIS_URL": REDIS_URL, "CONC": "50"})
        wait_for(lambda: len(done(tmp_path)) == n, what="every entry handled")
        wait_for(lambda: raw.xpending(stream, "g")["pending"] == 0, what="every entry acknowledged")
        time.sleep(0.3)  # the last XACK reaches the monitor connection
        acked = [i for call in mon.calls for i in call]
        assert sorted(acked) == sorted(ids), "each entry acknowledged exactly once"
        assert len(mon.calls) <= n // 4, f"{len(mon.calls)} XACK commands for {n} entries: not batched"
        assert max(len(c) for c in mon.calls) > 1

        # SIGTERM with 30 handlers in flight: they finish, and their queued acks go out before exit.
        mon.calls.clear()
        pipe = raw.pipeline()
        for i in range(n, n + 30):
            pipe.xadd(stream, {"body": json.dumps({"n": i, "sleep": 1.0})})
        late = set(pipe.execute())
        wait_for(lambda: len(lines(tmp_path, "start")) == n + 30, what="thirty handlers running")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0, proc.log()
        assert done(tmp_path) == set(range(n + 30))
        assert raw.xpending(stream, "g")["pending"] == 0  # acknowledged before the process exited
        time.sleep(0.3)
        assert sorted(i for call in mon.calls for i in call) == sorted(late)
        assert len(mon.calls) < 30, f"{len(mon.calls)} XACK commands for 30 entries"
    finally:
        mon.close()


# ---- SQS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    url, proc = start_moto(tmp_path_factory.mktemp("moto"))
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def sqs(moto):
    import boto3

    return boto3.client("sqs", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")  # fmt: skip


def counts(sqs, url):
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return tuple(int(attrs[k]) for k in names)


def fill(sqs, url, payloads):
    for at in range(0, len(payloads), 10):
        chunk = payloads[at : at + 10]
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": json.dumps(d)}
                                                      for i, d in enumerate(chunk)])  # fmt: skip


def test_sqs_deletes_go_in_batches_and_sigterm_flushes_them(cello_procs, tmp_path, moto, sqs):
    url = sqs.create_queue(QueueName=f"msgbatch-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    recorder = SqsRecorder(moto)
    try:
        fill(sqs, url, [{"n": i, "sleep": 0.2} for i in range(40)])
        env = {"KIND": "sqs", "SRC": url, "ENDPOINT": recorder.url, "CONC": "40", **CREDS}
        proc = consume(cello_procs, tmp_path, env)
        wait_for(lambda: len(done(tmp_path)) == 40, what="every message handled")
        wait_for(lambda: counts(sqs, url) == (0, 0), what="every message deleted while running")
        assert recorder.of("DeleteMessage") == [], "no message deleted alone"
        batches = recorder.of("DeleteMessageBatch")
        assert sum(batches) == 40 and max(batches) <= 10, batches
        assert len(batches) <= 20, f"{len(batches)} DeleteMessageBatch calls for 40 messages"

        # SIGTERM with 20 handlers in flight: they finish and are deleted before the process exits.
        recorder.calls.clear()
        fill(sqs, url, [{"n": i, "sleep": 1.5} for i in range(40, 60)])
        wait_for(lambda: len(lines(tmp_path, "start")) == 60, what="twenty handlers running")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0, proc.log()
        assert done(tmp_path) == set(range(60))
        assert recorder.of("DeleteMessage") == []
        assert sum(recorder.of("DeleteMessageBatch")) == 20, recorder.calls
        assert counts(sqs, url) == (0, 0)
        time.sleep(4.5)  # past the visibility timeout: nothing comes back
        assert counts(sqs, url) == (0, 0)
        assert all(x.split()[1] == "1" for x in lines(tmp_path, "done")), "none delivered twice"
    finally:
        recorder.close()


# ---- send_batch: one round trip ----------------------------------------------------------------

DELAY = 0.25  # every answer of the broker comes this late through the proxy


def test_redis_send_batch_is_one_round_trip_and_a_refused_message_fails_alone(raw, prefix):
    from cello.config import RedisConfig
    from cello.messaging import BatchSendError, Producer

    proxy = DelayProxy(6379, DELAY)
    loop = Loop()
    try:

        async def go():
            url = f"redis://127.0.0.1:{proxy.port}"
            out = {}
            for mode in ("stream", "list"):
                p = await Producer.connect(RedisConfig(url=url), mode=mode)
                t0 = time.monotonic()
                out[mode] = await p.send_batch([(prefix + ":" + mode, {"n": i}) for i in range(40)])
                out[mode + "_secs"] = time.monotonic() - t0
                await p.close()
            t0 = time.monotonic()
            p = await Producer.connect(RedisConfig(url=url))
            for i in range(3):
                await p.send(prefix + ":seq", {"n": i})
            out["seq_secs"] = time.monotonic() - t0
            raw.set(prefix + ":str", "not a stream")
            with pytest.raises(BatchSendError) as info:
                await p.send_batch([(prefix + ":mixed", "a"), (prefix + ":str", "b"), (prefix + ":mixed", "c")])
            out["error"] = info.value
            return out

        out = loop.run(go())
    finally:
        loop.close()
        proxy.close()
    assert out["seq_secs"] >= 3 * DELAY  # the proxy does delay each round trip
    for mode in ("stream", "list"):
        assert out[mode + "_secs"] < 2 * DELAY, f"{mode}: {out[mode + '_secs']:.2f} s for 40: not one round trip"
    entries = raw.xrange(prefix + ":stream")
    assert [e[0] for e in entries] == out["stream"]
    assert [json.loads(e[1]["body"])["n"] for e in entries] == list(range(40))
    assert [json.loads(x)["n"] for x in raw.lrange(prefix + ":list", 0, -1)] == list(range(39, -1, -1))
    assert out["list"] == [str(i) for i in range(1, 41)]  # LPUSH answers the list's length
    err = out["error"]
    assert list(err.failed) == [1] and "WRONGTYPE" in str(err.failed[1]), err
    assert [e[1]["body"] for e in raw.xrange(prefix + ":mixed")] == ["a", "c"]
    assert err.results[0] and err.results[2]


def test_rabbitmq_send_batch_awaits_confirms_together_and_a_returned_message_fails_alone():
    require(5672, "RabbitMQ")
    import pika
    from cello.config import RabbitMQConfig
    from cello.messaging import BatchSendError, Producer

    queue = f"msgbatch-{uuid.uuid4().hex[:10]}"
    proxy = DelayProxy(5672, DELAY)
    loop = Loop()
    try:

        async def go():
            p = await Producer.connect(RabbitMQConfig(url=AMQP_URL.format(port=proxy.port)))
            await p.declare_queue(queue)
            t0 = time.monotonic()
            ids = await p.send_batch([(queue, {"n": i}) for i in range(40)])
            batch_secs = time.monotonic() - t0
            t0 = time.monotonic()
            for i in range(3):
                await p.send(queue, {"n": 100 + i})
            seq_secs = time.monotonic() - t0
            with pytest.raises(BatchSendError) as info:
                await p.send_batch([(queue, {"n": 200}), (queue + "-nowhere", {"n": 201}), (queue, {"n": 202})])
            await p.close()
            return ids, batch_secs, seq_secs, info.value

        ids, batch_secs, seq_secs, err = loop.run(go())
    finally:
        loop.close()
        proxy.close()
    assert seq_secs >= 3 * DELAY  # each confirm awaited alone takes a delayed round trip
    assert batch_secs < 2 * DELAY, f"{batch_secs:.2f} s for 40: confirms not awaited together"
    assert len(ids) == 40
    assert list(err.failed) == [1] and "no queue is bound" in str(err.failed[1]), err
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL.format(port=5672)))
    try:
        ch = conn.channel()
        got = []
        while True:
            method, _, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                break
            got.append(json.loads(body)["n"])
        ch.queue_delete(queue)
        ch.queue_delete(queue + ".dead")
    finally:
        conn.close()
    assert got == [*range(40), 100, 101, 102, 200, 202]
