"""Issue 15: ``cello.messaging`` on Redis, black-box — a producer process, a ``cello consume``
process and the real Redis on 127.0.0.1:6379 between them (keys ``msgtest:<random>:*``).

Streams (consumer groups, XAUTOCLAIM) and lists (reliable queue): at-least-once (ack after the
handler; SIGKILL mid-batch loses nothing), retries with backoff then the dead-letter stream with
the error in its headers, bounded concurrency, SIGTERM drain, admin port, exit code 3."""

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
import redis as redis_py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port
from db_helpers import REDIS_URL, Loop, require

__all__ = ["cello_procs"]
pytestmark = pytest.mark.timeout(60)

APP = textwrap.dedent(
    """
    import asyncio, os, time
    import redis
    from cello.messaging import MessageResult, redis_consumer

    P = os.environ["P"]
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    MODE = os.environ.get("MODE", "stream")
    SLEEP = float(os.environ.get("SLEEP", "0"))
    now = 0

    @redis_consumer(P + ":in", group="g" if MODE == "stream" else None, mode=MODE,
                    concurrency=int(os.environ.get("CONC", "4")), max_retries=2, retry_backoff_secs=0.05,
                    claim_idle_secs=1.0, dead_letter=P + ":dead")
    async def handle(message):
        global now
        data = message.json()
        r.rpush(P + ":started", data["n"])
        now += 1
        r.set(P + ":max", max(int(r.get(P + ":max") or 0), now))
        try:
            if SLEEP:
                await asyncio.sleep(SLEEP)
            tries = r.incr(P + ":tries:" + str(data["n"]))
            if data.get("fail"):
                raise ValueError("bad order " + str(data["n"]))
            if data.get("flaky") and tries == 1:
                raise RuntimeError("flaky once")
            if data.get("result"):
                return MessageResult[data["result"]]
            r.rpush(P + ":done", f'{data["n"]}|{message.delivery_count}|{message.key}|{message.headers.get("h")}')
        finally:
            now -= 1

    @redis_consumer(P + ":sync-in")
    def sync_handle(message):
        r.rpush(P + ":sync", message.text)
    """
)

PRODUCER = textwrap.dedent(
    """
    import asyncio, json, sys
    from cello.config import RedisConfig
    from cello.messaging import Producer

    async def main():
        url, dest, mode, payloads = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
        p = await Producer.connect(RedisConfig(url=url), mode=mode)
        first, rest = payloads[:1], payloads[1:]
        for d in first:
            kw = {"key": "k" + str(d["n"]), "headers": {"h": "v"}} if mode == "stream" else {}
            print(await p.send(dest, d, **kw))
        ids = await p.send_batch([(dest, d) for d in rest])
        print(len(ids))
        await p.close()

    asyncio.run(main())
    """
)


@pytest.fixture(scope="module")
def raw():
    require(6379, "Redis")
    r = redis_py.Redis.from_url(REDIS_URL, decode_responses=True)
    yield r
    for k in r.scan_iter("msgtest:*"):
        r.delete(k)
    r.close()


@pytest.fixture
def prefix(raw):
    return f"msgtest:{uuid.uuid4().hex[:10]}"


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "mapp.py").write_text(APP)
    (tmp_path / "producer.py").write_text(PRODUCER)
    return tmp_path


def produce(cello_procs, app_dir, dest, payloads, mode="stream"):
    proc = cello_procs.start([REDIS_URL, dest, mode, json.dumps(payloads)], script=app_dir / "producer.py",
                             cwd=app_dir)  # fmt: skip
    assert proc.wait(20) == 0, proc.log()
    return proc.log()


def consume(cello_procs, app_dir, prefix, *extra, mode="stream", env=None, target="mapp:handle"):
    port = free_port()
    e = {"P": prefix, "REDIS_URL": REDIS_URL, "MODE": mode, **(env or {})}
    proc = cello_procs.start(["consume", target, "--admin-port", str(port), *extra], cwd=app_dir, env=e, port=port)
    resp = proc.wait_http("/health/ready")
    assert resp.status_code == 200, resp.text
    return proc


def wait_for(check, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} not reached within {timeout} s")


def done_numbers(raw, prefix):
    return {int(x.split("|")[0]) for x in raw.lrange(prefix + ":done", 0, -1)}


def test_stream_ack_retry_dead_letter_and_admin_port(cello_procs, app_dir, raw, prefix):
    payloads = [{"n": i} for i in range(20)] + [{"n": 20, "fail": True}, {"n": 21, "flaky": True}]
    out = produce(cello_procs, app_dir, prefix + ":in", payloads)
    assert out.splitlines()[-1] == "21"  # send_batch confirmed every message
    proc = consume(cello_procs, app_dir, prefix)
    wait_for(lambda: done_numbers(raw, prefix) >= set(range(20)) | {21}, what="all good messages handled")
    wait_for(lambda: raw.xlen(prefix + ":dead") == 1, what="the dead letter")
    done = {int(x.split("|")[0]): x for x in raw.lrange(prefix + ":done", 0, -1)}
    assert done[0] == "0|1|k0|v"  # key and headers travel; first delivery
    assert done[21].startswith("21|2|")  # the flaky one: its retry is delivery 2
    assert raw.get(prefix + ":tries:20") == "3"  # max_retries=2: three attempts, then dead-lettered
    [(_, fields)] = raw.xrange(prefix + ":dead")
    assert fields["h:x-error"] == "ValueError: bad order 20"
    assert fields["h:x-delivery-count"] == "3"
    assert json.loads(fields["body"]) == {"n": 20, "fail": True}
    # Everything acknowledged: nothing pending in the group.
    wait_for(lambda: raw.xpending(prefix + ":in", "g")["pending"] == 0, what="no pending entries")
    assert httpx.get(proc.url("/health/live")).status_code == 200
    metrics = httpx.get(proc.url("/metrics")).text
    dest = f'messaging_system="redis",messaging_destination_name="{prefix}:in"'
    assert f"cello_messaging_messages_acked_total{{{dest}}} 21" in metrics, metrics
    assert f"cello_messaging_messages_dead_lettered_total{{{dest}}} 1" in metrics
    assert httpx.get(proc.url("/nope")).status_code == 404
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(15) == 0, proc.log()


def test_results_reject_requeue_dead_letter(cello_procs, app_dir, raw, prefix):
    payloads = [{"n": 1, "result": "REJECT"}, {"n": 2, "result": "DEAD_LETTER"}, {"n": 3, "result": "ACK"}]
    produce(cello_procs, app_dir, prefix + ":in", payloads)
    consume(cello_procs, app_dir, prefix)
    wait_for(lambda: raw.xlen(prefix + ":dead") == 1, what="the dead letter")
    [(_, fields)] = raw.xrange(prefix + ":dead")
    assert fields["h:x-error"] == "dead-lettered by the handler"
    wait_for(lambda: raw.xpending(prefix + ":in", "g")["pending"] == 0, what="all settled")
    assert raw.get(prefix + ":tries:1") == "1"  # REJECT: dropped, never retried


@pytest.mark.parametrize("mode", ["stream", "list"])
def test_sigkill_mid_batch_loses_nothing(cello_procs, app_dir, raw, prefix, mode):
    n = 24
    produce(cello_procs, app_dir, prefix + ":in", [{"n": i} for i in range(n)], mode=mode)
    proc = consume(cello_procs, app_dir, prefix, mode=mode, env={"SLEEP": "0.3"})
    wait_for(lambda: raw.llen(prefix + ":done") >= 4, what="some messages handled")
    proc.kill()  # SIGKILL the whole tree with handlers in flight
    assert len(done_numbers(raw, prefix)) < n
    consume(cello_procs, app_dir, prefix, mode=mode, env={"SLEEP": "0.01"})
    wait_for(lambda: done_numbers(raw, prefix) == set(range(n)), timeout=30, what="every message handled")
    if mode == "stream":
        wait_for(lambda: raw.xpending(prefix + ":in", "g")["pending"] == 0, what="no pending entries")
        redelivered = [x for x in raw.lrange(prefix + ":done", 0, -1) if x.split("|")[1] != "1"]
        assert redelivered, "the killed worker's messages were claimed again (delivery_count > 1)"
    else:
        assert raw.llen(prefix + ":in") == 0
        assert not [k for k in raw.scan_iter(prefix + ":in:processing:*") if raw.llen(k)]


def test_concurrency_is_bounded(cello_procs, app_dir, raw, prefix):
    produce(cello_procs, app_dir, prefix + ":in", [{"n": i} for i in range(12)])
    consume(cello_procs, app_dir, prefix, env={"SLEEP": "0.2", "CONC": "3"})
    wait_for(lambda: len(done_numbers(raw, prefix)) == 12, what="all handled")
    assert raw.get(prefix + ":max") == "3"


def test_sigterm_drains_in_flight_messages(cello_procs, app_dir, raw, prefix):
    produce(cello_procs, app_dir, prefix + ":in", [{"n": i} for i in range(4)])
    proc = consume(cello_procs, app_dir, prefix, env={"SLEEP": "1.5"})
    wait_for(lambda: raw.llen(prefix + ":started") == 4, what="four handlers running")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(15) == 0, proc.log()
    assert done_numbers(raw, prefix) == {0, 1, 2, 3}  # finished, not cut off
    assert raw.xpending(prefix + ":in", "g")["pending"] == 0  # and acknowledged before exit


def test_unreachable_broker_at_startup_exits_3(cello_procs, app_dir):
    dead = free_port()
    env = {"P": "msgtest:none", "REDIS_URL": f"redis://127.0.0.1:{dead}", "CELLO_QUEUES": "q",
           "CELLO_QUEUE_Q_KIND": "redis", "CELLO_QUEUE_Q_ADDRESS": f"127.0.0.1:{dead}"}  # fmt: skip
    code, log = cello_procs.run(
        ["consume", "mapp:sync_handle", "--queue", "q", "--admin-port", str(free_port()), "--startup-timeout", "1"],
        cwd=app_dir,
        env=env,
    )
    assert code == 3, log
    assert "failed to start" in log and f"127.0.0.1:{dead}" in log, log


def test_queue_binding_gives_broker_and_list(cello_procs, app_dir, raw, prefix):
    """The operator's variables: `--queue orders` consumes the list CELLO_QUEUE_ORDERS_LIST."""
    env = {"CELLO_QUEUES": "orders", "CELLO_QUEUE_ORDERS_KIND": "redis",
           "CELLO_QUEUE_ORDERS_ADDRESS": "127.0.0.1:6379", "CELLO_QUEUE_ORDERS_LIST": prefix + ":bound"}  # fmt: skip
    for i in range(3):
        raw.lpush(prefix + ":bound", f"m{i}")
    consume(cello_procs, app_dir, prefix, "--queue", "orders", target="mapp:sync_handle", env=env)
    wait_for(lambda: raw.llen(prefix + ":sync") == 3, what="the bound list consumed")
    # A def handler; concurrent (concurrency=10 threads), so the finishing order is free.
    assert sorted(raw.lrange(prefix + ":sync", 0, -1)) == ["m0", "m1", "m2"]


def test_module_target_runs_every_consumer_with_workers(cello_procs, app_dir, raw, prefix):
    produce(cello_procs, app_dir, prefix + ":in", [{"n": i} for i in range(10)])
    proc = consume(cello_procs, app_dir, prefix, "--workers", "2", target="mapp")
    wait_for(lambda: len(done_numbers(raw, prefix)) == 10, what="all handled")
    assert len(proc.workers()) == 2
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0, proc.log()


def test_manual_consumer_and_producer_api(raw, prefix):
    from cello.config import RedisConfig
    from cello.messaging import Consumer, Producer

    loop = Loop()
    try:

        async def go():
            p = await Producer.connect(RedisConfig(url=REDIS_URL))
            await p.send(prefix + ":m", {"a": 1}, key="k", headers={"x": "y"})
            c = await Consumer.connect(RedisConfig(url=REDIS_URL), group="g")
            await c.subscribe([prefix + ":m"])
            m = await c.poll(2000)
            assert m.json() == {"a": 1} and m.key == "k" and m.headers == {"x": "y"} and m.topic == prefix + ":m"
            assert raw.xpending(prefix + ":m", "g")["pending"] == 1
            await c.commit(m)
            assert raw.xpending(prefix + ":m", "g")["pending"] == 0
            assert await c.poll(100) is None
            await c.close()
            await p.close()

        loop.run(go())
    finally:
        loop.close()
