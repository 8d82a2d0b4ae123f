"""Issue 15: ``cello.messaging`` on Kafka, black-box — a producer process, ``cello consume``
processes and a Kafka cluster between them: librdkafka's mock cluster (real Kafka protocol on
127.0.0.1) run in its own process for the module, checked with an independent client
(confluent-kafka). Topics are ``kt.<random>``.

Acks before ``send`` returns, at-least-once commits (SIGKILL mid-batch loses nothing),
retries then the ``<topic>.dlq`` topic with the error in the headers, the other results,
ordering per partition under ``concurrency``, a rebalance between two consumer processes,
SIGTERM drain, the queue binding and the unreachable-broker exit code, the manual API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import confluent_kafka
import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port
from db_helpers import Loop

__all__ = ["cello_procs"]
pytestmark = pytest.mark.timeout(90)
PARTITIONS = 4

MOCK = textwrap.dedent(
    """
    import sys
    from cello._cello import KafkaMockCluster

    cluster = KafkaMockCluster(1)
    cluster.set_round_trip_time(int(sys.argv[1]))
    print(cluster.bootstrap_servers(), flush=True)
    for line in sys.stdin:  # "topic partitions": create it
        name, partitions = line.split()
        cluster.create_topic(name, int(partitions))
        print("ok", flush=True)
    """
)

APP = textwrap.dedent(
    """
    import asyncio, os, time
    from cello.config import KafkaConfig
    from cello.messaging import MessageResult, kafka_consumer

    T = os.environ["T"]
    OUT = os.environ["OUT"]
    SLEEP = float(os.environ.get("SLEEP", "0"))
    # A short session: the group notices a SIGKILLed member within seconds.
    CONFIG = KafkaConfig(session_timeout_ms=6000)

    def record(line):
        with open(OUT, "a") as f:
            f.write(line + "\\n")

    @kafka_consumer(T, os.environ.get("GROUP"), os.environ.get("AUTO_COMMIT", "1") == "1",
                    brokers=os.environ.get("BROKERS") or None, config=CONFIG,
                    concurrency=int(os.environ.get("CONC", "10")), max_retries=2, retry_backoff_secs=0.05)
    async def handle(message):
        data = message.json()
        record(f"start {data['n']} {message.partition} {message.offset} {os.getpid()}")
        if SLEEP:
            await asyncio.sleep(SLEEP)
        if data.get("fail"):
            raise ValueError("bad order " + str(data["n"]))
        result = data.get("result")
        if result == "REQUEUE" and message.delivery_count > 1:
            result = None
        if result:
            return MessageResult[result]
        record(f"done {data['n']} {message.delivery_count} {message.key} {message.headers.get('h')} "
               f"{message.partition} {message.offset} {os.getpid()}")

    @kafka_consumer(T, T + "-sync", brokers=os.environ.get("BROKERS") or None, config=CONFIG)
    def handle_sync(message):
        time.sleep(0.01)
        record(f"done {message.json()['n']} sync {message.topic}")
    """
)

PRODUCER = textwrap.dedent(
    """
    import asyncio, json, sys
    from cello.config import KafkaConfig
    from cello.messaging import Producer

    async def main():
        brokers, topic, payloads = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        p = await Producer.connect(KafkaConfig(brokers=brokers))
        first, rest = payloads[:1], payloads[1:]
        for d in first:
            print("id", await p.send(topic, d, key="k" + str(d["n"]), headers={"h": "v"}))
        ids = await p.send_batch([{"topic": topic, "value": d, "key": "k" + str(d["n"])} for d in rest])
        print("sent", 1 + len(ids), flush=True)
        await p.close()

    asyncio.run(main())
    """
)


def _mock_cluster(round_trip_ms: int):
    """The mock cluster's process, answering each request ``round_trip_ms`` after it is
    ready: ``(bootstrap servers, create_topic)``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MOCK, str(round_trip_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        servers = proc.stdout.readline().strip()
        assert servers, "the mock cluster did not start"

        def create_topic(name: str, partitions: int = PARTITIONS) -> None:
            proc.stdin.write(f"{name} {partitions}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "ok"

        yield servers, create_topic
    finally:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def kafka():
    yield from _mock_cluster(0)


@pytest.fixture(scope="module")
def kafka_rtt():
    """A mock cluster with a network's round trip (200 ms), for rebalances: the mock, unlike
    Kafka, refuses a member's SyncGroup that arrives after the leader's (the group is up
    already: INVALID_REQUEST), and that member's rejoin then refuses the commits of the
    member revoking partitions (JOINING) — see docs/messaging.md. The leader sends its
    SyncGroup only after a Metadata round trip (for the assignor), so with a round trip the
    other members' SyncGroups arrive a round trip before it, as they do on a network."""
    yield from _mock_cluster(200)


@pytest.fixture
def topic(kafka):
    name = f"kt.{uuid.uuid4().hex[:10]}"
    kafka[1](name)
    kafka[1](name + ".dlq", 1)
    return name


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "kapp.py").write_text(APP)
    (tmp_path / "producer.py").write_text(PRODUCER)
    return tmp_path


def produce(cello_procs, app_dir, servers, topic, payloads):
    proc = cello_procs.start([servers, topic, json.dumps(payloads)], script=app_dir / "producer.py", cwd=app_dir)
    assert proc.wait(30) == 0, proc.log()
    assert f"sent {len(payloads)}" in proc.log(), proc.log()
    return proc.log()


def consume(cello_procs, app_dir, servers, topic, *extra, env=None, target="kapp:handle"):
    port = free_port()
    e = {"T": topic, "BROKERS": servers, "OUT": str(app_dir / "out.txt"), **(env or {})}
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


def wait_for(check, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} not reached within {timeout} s")


def committed_total(servers, group, topic):
    """Sum over the partitions of the group's committed offsets (0 where none)."""
    c = confluent_kafka.Consumer({"bootstrap.servers": servers, "group.id": group})
    try:
        parts = [confluent_kafka.TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    finally:
        c.close()


def read_all(servers, topic, want, timeout=20.0):
    """``want`` messages of ``topic`` from the start, with an independent client."""
    c = confluent_kafka.Consumer(
        {"bootstrap.servers": servers, "group.id": f"check-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"}
    )
    out = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                out.append(m)
        return out
    finally:
        c.close()


def test_acks_retry_dead_letter_topic_commit_and_sigterm(cello_procs, app_dir, kafka, topic):
    servers = kafka[0]
    payloads = [{"n": i} for i in range(10)] + [{"n": 10, "fail": True}]
    log = produce(cello_procs, app_dir, servers, topic, payloads)
    assert "id " in log  # "<partition>:<offset>" once the broker acknowledged it
    # Acknowledged by the broker before send returned: all eleven are there, read independently.
    assert len(read_all(servers, topic, 11)) == 11
    proc = consume(cello_procs, app_dir, servers, topic)
    wait_for(lambda: done_numbers(app_dir) == set(range(10)), what="all good messages handled")
    (dead,) = read_all(servers, topic + ".dlq", 1)
    assert json.loads(dead.value()) == {"n": 10, "fail": True}
    headers = {k: v.decode() for k, v in dead.headers()}
    assert headers["x-error"] == "ValueError: bad order 10"
    assert headers["x-delivery-count"] == "3"  # max_retries=2: three attempts
    assert headers["x-original-topic"] == topic
    assert dead.key() == b"k10"
    first = next(x for x in lines(app_dir, "done") if x.startswith("0 "))
    assert first.split()[:4] == ["0", "1", "k0", "v"]  # key and headers travel; first delivery
    metrics = wait_for(
        lambda: (m := httpx.get(proc.url("/metrics")).text) and "dead_lettered_total{" in m and m, what="metrics"
    )
    dest = f'messaging_system="kafka",messaging_destination_name="{topic}"'
    assert f"cello_messaging_messages_acked_total{{{dest}}} 10" in metrics, metrics
    assert f"cello_messaging_messages_dead_lettered_total{{{dest}}} 1" in metrics, metrics
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0, proc.log()
    assert committed_total(servers, topic, topic) == 11  # every settled message committed


def test_sigkill_mid_batch_loses_nothing(cello_procs, app_dir, kafka, topic):
    servers, n = kafka[0], 24
    produce(cello_procs, app_dir, servers, topic, [{"n": i} for i in range(n)])
    proc = consume(cello_procs, app_dir, servers, topic, env={"SLEEP": "0.3"})
    wait_for(lambda: len(lines(app_dir, "done")) >= 4, what="some messages handled")
    proc.kill()
    assert len(done_numbers(app_dir)) < n
    consume(cello_procs, app_dir, servers, topic, env={"SLEEP": "0.01"})
    wait_for(lambda: done_numbers(app_dir) == set(range(n)), timeout=45, what="every message handled")
    wait_for(lambda: committed_total(servers, topic, topic) == n, what="every offset committed")


def test_ordering_per_partition_under_concurrency(cello_procs, app_dir, kafka, topic):
    servers, n = kafka[0], 40
    produce(cello_procs, app_dir, servers, topic, [{"n": i} for i in range(n)])
    consume(cello_procs, app_dir, servers, topic, env={"SLEEP": "0.05", "CONC": "4"})
    wait_for(lambda: done_numbers(app_dir) == set(range(n)), what="every message handled")
    events = [(w, *ln.split()) for w, ln in _events(app_dir)]
    running: dict[str, str] = {}
    offsets: dict[str, list[int]] = defaultdict(list)
    overlap = 0
    for ev in events:
        if ev[0] == "start":
            _, _num, part, off, _pid = ev
            assert part not in running, f"two handlers at once in partition {part}: {events}"
            running[part] = off
            offsets[part].append(int(off))
            overlap = max(overlap, len(running))
        else:
            part, off = ev[5], ev[6]
            assert running.pop(part) == off
    for part, offs in offsets.items():
        assert offs == sorted(offs), f"partition {part} out of order: {offs}"
    assert len(offsets) > 1 and overlap > 1  # partitions did run side by side


def _events(app_dir):
    text = (app_dir / "out.txt").read_text()
    return [tuple(ln.split(" ", 1)) for ln in text.splitlines()]


def rebalance(cello_procs, app_dir, servers: str, topic: str, n: int) -> tuple[list[list[str]], dict]:
    """Two consumer processes, the second joining mid-stream, a handler running in every
    partition all along (the whole topic in flight, handlers of 0.8 s): each partition that
    moves has one running when it is revoked. Returns every handler start (number, partition,
    offset, pid) and the partitions that changed hands, once every message was handled, every
    offset committed and both consumers exited 0 on SIGTERM."""
    produce(cello_procs, app_dir, servers, topic, [{"n": i} for i in range(n)])
    env = {"SLEEP": "0.8", "CONC": str(n)}
    a = consume(cello_procs, app_dir, servers, topic, env=env)
    wait_for(lambda: len(lines(app_dir, "done")) >= 4, what="the first consumer at work")
    b = consume(cello_procs, app_dir, servers, topic, env=env)
    wait_for(lambda: done_numbers(app_dir) == set(range(n)), timeout=60, what="every message handled")
    starts = [ln.split() for ln in lines(app_dir, "start")]  # n partition offset pid
    pids = Counter(pid for *_, pid in starts)
    assert len(pids) == 2, pids  # both consumer processes got partitions
    by_part = defaultdict(list)
    for _num, part, off, pid in starts:
        by_part[part].append((int(off), pid))
    moved = {p: offs for p, offs in by_part.items() if len({pid for _, pid in offs}) == 2}
    assert moved, by_part  # a partition changed hands mid-stream
    # Once the group is stable again, every settled offset is committed (within a second).
    wait_for(lambda: committed_total(servers, topic, topic) == n, what="every offset committed")
    for p in (a, b):
        os.kill(p.pid, signal.SIGTERM)
    assert a.wait(30) == 0 and b.wait(30) == 0
    return starts, moved


def test_rebalance_handles_no_message_twice(cello_procs, app_dir, kafka_rtt):
    """Commit on revoke: the second consumer joins mid-stream and takes partitions over exactly
    where the first stopped — every message handled, each once; both processes got
    partitions, every offset committed, both drain and exit 0.

    The bound is 0 (as long as no handler runs longer than the revoke's wait, 10 s; these take
    0.8 s): on revoke, the messages of the moved partitions not begun are not begun any more,
    the one running per partition is waited for, and the first unsettled offset is committed
    before the partition is given up — the new owner starts there. The cooperative-sticky
    assignor revokes during a stable group, when librdkafka's mock takes commits (see
    docs/messaging.md).

    Falsified: without the wait, the message running in each moved partition is handled twice
    (2); with the eager assignor, the mock refuses the commit on revoke (16 handled twice);
    on the mock without a round trip (``kafka``), the mock's late-SyncGroup refusal refuses
    the commit on revoke now and then (every message of the moved partitions since their last
    auto-commit handled again)."""
    topic = f"kt.{uuid.uuid4().hex[:10]}"
    kafka_rtt[1](topic)
    kafka_rtt[1](topic + ".dlq", 1)
    starts, moved = rebalance(cello_procs, app_dir, kafka_rtt[0], topic, 80)
    twice = sorted(num for num, k in Counter(num for num, *_ in starts).items() if k > 1)
    assert twice == [], f"handled twice: {twice}; per partition (offset, pid): {dict(moved)}"
    for part, offs in moved.items():
        # One reader after the other, each offset once: the new owner began right after the
        # last message the old one began (and finished).
        assert [o for o, _ in offs] == sorted(o for o, _ in offs), (part, offs)


def test_results_reject_requeue_dead_letter_and_sync_handler(cello_procs, app_dir, kafka, topic):
    servers = kafka[0]
    payloads = [{"n": 1, "result": "REJECT"}, {"n": 2, "result": "DEAD_LETTER"}, {"n": 3, "result": "REQUEUE"}]
    produce(cello_procs, app_dir, servers, topic, payloads)
    proc = consume(cello_procs, app_dir, servers, topic)
    # REQUEUE: published again at the end of the topic, handled on its second delivery.
    wait_for(lambda: any(x.startswith("3 2 ") for x in lines(app_dir, "done")), what="the requeued message")
    (dead,) = read_all(servers, topic + ".dlq", 1)
    assert json.loads(dead.value())["n"] == 2
    assert dict(dead.headers())["x-error"] == b"dead-lettered by the handler"
    assert {1, 2} & done_numbers(app_dir) == set()
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0, proc.log()
    assert committed_total(servers, topic, topic) == 4  # three, and the requeued copy
    sync = consume(cello_procs, app_dir, servers, topic, target="kapp:handle_sync")
    wait_for(lambda: len([x for x in lines(app_dir, "done") if " sync " in x]) == 4, what="the sync handler")
    assert f"sync {topic}" in lines(app_dir, "done")[-1]
    sync.kill()


def test_queue_binding_and_unreachable_broker(cello_procs, app_dir, kafka, topic):
    servers = kafka[0]
    p = "CELLO_QUEUE_EVENTS_"
    env = {"CELLO_QUEUES": "events", p + "KIND": "kafka", p + "BOOTSTRAP_SERVERS": servers, p + "TOPIC": topic,
           p + "GROUP": "bound", "BROKERS": ""}  # fmt: skip
    produce(cello_procs, app_dir, servers, topic, [{"n": 7}])
    proc = consume(cello_procs, app_dir, servers, "ignored-by-binding", "--queue", "events", env=env)
    wait_for(lambda: done_numbers(app_dir) == {7}, what="the bound topic consumed")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0, proc.log()
    assert committed_total(servers, "bound", topic) == 1  # the binding's group
    # Without --queue, an unset broker list falls back to the binding of the topic.
    produce(cello_procs, app_dir, servers, topic, [{"n": 8}])
    proc = consume(cello_procs, app_dir, servers, topic, env={**env, "GROUP": "bound"})
    wait_for(lambda: done_numbers(app_dir) == {7, 8}, what="the fallback to the binding")
    proc.kill()
    dead = free_port()
    env[p + "BOOTSTRAP_SERVERS"] = f"127.0.0.1:{dead}"
    code, log = cello_procs.run(
        ["consume", "kapp:handle", "--queue", "events", "--admin-port", str(free_port()), "--startup-timeout", "1"],
        cwd=app_dir,
        env={"T": topic, "OUT": str(app_dir / "out.txt"), **env},
        timeout=30,
    )
    assert code == 3, log
    assert "failed to start" in log and f"127.0.0.1:{dead}" in log, log


def test_manual_api_and_kafka_producer(kafka, topic):
    from cello.config import KafkaConfig
    from cello.messaging import Consumer, Producer, kafka_producer

    servers = kafka[0]
    loop = Loop()
    try:

        @kafka_producer(topic, brokers=servers)
        async def make(n):
            return {"made": n}

        async def go():
            p = await Producer.connect(KafkaConfig(brokers=servers))
            assert ":" in await p.send(topic, {"a": 1}, key="k", headers={"x": "y"})
            assert await make(5) == {"made": 5}  # published before it returned
            c = await Consumer.connect(KafkaConfig(brokers=servers, group_id="manual"))
            await c.subscribe(topic)
            got = {}
            deadline = time.monotonic() + 20
            while len(got) < 2 and time.monotonic() < deadline:
                m = await c.poll(1000)
                if m is not None:
                    got[str(m.json())] = m
                    await c.commit(m)
            m = got[str({"a": 1})]
            assert m.headers == {"x": "y"} and m.key == "k" and m.topic == topic
            assert m.partition is not None and m.offset is not None
            assert str({"made": 5}) in got
            await c.close()
            await p.close()

        loop.run(go(), timeout=40)
    finally:
        loop.close()
    assert committed_total(servers, "manual", topic) == 2


BATCH_PRODUCER = textwrap.dedent(
    """
    import asyncio, json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from cello.config import KafkaConfig
    from cello.messaging import BatchSendError, Producer

    OWN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def main():
        brokers, topic = sys.argv[1], sys.argv[2]
        trace.set_tracer_provider(TracerProvider())
        p = await Producer.connect(KafkaConfig(brokers=brokers))
        items = [{"topic": topic, "value": {"n": i}, "key": f"k{i % 7}", "headers": {"h": str(i)}} for i in range(300)]
        items[7]["headers"]["traceparent"] = OWN  # a message's own context is kept
        items[150] = (topic, b"x" * 2_000_000, "big")  # over message.max.bytes: refused
        with trace.get_tracer("t").start_as_current_span("parent") as span:
            try:
                await p.send_batch(items)
                print("no error")
            except BatchSendError as exc:
                ids = [r if isinstance(r, str) else None for r in exc.results]
                print(json.dumps({"trace": format(span.get_span_context().trace_id, "032x"), "message": str(exc),
                                  "failed": sorted(exc.failed), "ids": ids}))
        await p.close()

    asyncio.run(main())
    """
)


def test_send_batch_awaits_all_acks_together_keeps_order_per_key_and_names_failures(cello_procs, app_dir, kafka,
                                                                                   topic):  # fmt: skip
    servers = kafka[0]
    (app_dir / "batch.py").write_text(BATCH_PRODUCER)
    proc = cello_procs.start([servers, topic], script=app_dir / "batch.py", cwd=app_dir)
    assert proc.wait(60) == 0, proc.log()
    report = json.loads(proc.log().strip().splitlines()[-1])
    # The one refused message is named (index, destination, why); the other 299 were sent.
    assert report["failed"] == [150]
    assert f"1 of 300 messages were not sent — #150 to {topic}: Kafka: " in report["message"]
    assert "too large" in report["message"].lower(), report["message"]
    assert report["ids"][150] is None and all(report["ids"][i] for i in range(300) if i != 150)
    got = read_all(servers, topic, 299)
    assert len(got) == 299
    assert {m.key() for m in got} == {f"k{i}".encode() for i in range(7)}
    # The id send_batch returned is where the broker put the message.
    by_n = {json.loads(m.value())["n"]: m for m in got}
    assert set(by_n) == set(range(300)) - {150}
    for n, m in by_n.items():
        assert report["ids"][n] == f"{m.partition()}:{m.offset()}"
    # Order per key: within a key's partition, offsets grow with n.
    per_key = defaultdict(list)
    for n in sorted(by_n):
        per_key[by_n[n].key()].append(by_n[n].offset())
    assert all(offs == sorted(offs) for offs in per_key.values())
    # Each message carries its headers and a W3C context: the active span's trace, or its own.
    for n, m in by_n.items():
        headers = {k: v.decode() for k, v in m.headers()}
        assert headers["h"] == str(n)
        if n == 7:
            assert headers["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        else:
            assert headers["traceparent"].split("-")[1] == report["trace"]
