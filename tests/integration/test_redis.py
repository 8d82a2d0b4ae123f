"""Issue 14 item 6: ``cello.database.Redis`` against the real Redis on 127.0.0.1:6379 (keys under
``h14test:``, database 0 and 3), checked with redis-py; cluster/sentinel configuration errors
(a real Sentinel: ``test_redis_sentinel.py``)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis as redis_py
from cello.config import RedisConfig
from cello.database import InterfaceError, Redis, RedisError, RedisUnavailable
from db_helpers import REDIS_URL, Loop, require


@pytest.fixture(scope="module")
def loop():
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def raw():
    require(6379, "Redis")
    r = redis_py.Redis.from_url(REDIS_URL, decode_responses=True)
    for k in r.scan_iter("h14test:*"):
        r.delete(k)
    yield r
    for k in r.scan_iter("h14test:*"):
        r.delete(k)
    r.close()


@pytest.fixture(scope="module")
def r(raw):
    return Redis(RedisConfig(url=REDIS_URL, key_prefix="h14test:", pool_size=2))


def test_strings_counters_and_prefix(r, raw, loop):
    assert loop.run(r.set("a", "1")) is True
    assert raw.get("h14test:a") == "1"  # key_prefix on every key
    assert loop.run(r.get("a")) == "1"
    assert loop.run(r.get("missing")) is None
    assert loop.run(r.get("a", decode=False)) == b"1"
    assert loop.run(r.incr("a")) == 2
    assert loop.run(r.incr("a", 5)) == 7
    assert loop.run(r.decr("a")) == 6
    assert loop.run(r.exists("a")) is True
    assert loop.run(r.exists("a", "missing")) == 1
    assert loop.run(r.delete("a")) == 1
    assert loop.run(r.exists("a")) is False


def test_ttl_and_default_ttl(r, raw, loop):
    assert loop.run(r.set("t", "v", ttl=100))
    assert 90 < raw.ttl("h14test:t") <= 100
    assert loop.run(r.set("nottl", "v"))
    assert raw.ttl("h14test:nottl") == -1
    assert loop.run(r.expire("nottl", 50)) is True
    assert 40 < raw.ttl("h14test:nottl") <= 50
    with_default = Redis(RedisConfig(url=REDIS_URL, key_prefix="h14test:", default_ttl=30))
    assert loop.run(with_default.set("dflt", "v"))
    assert 20 < raw.ttl("h14test:dflt") <= 30


def test_hashes_lists_sets(r, raw, loop):
    assert loop.run(r.hset("h", "f1", "v1")) == 1
    assert loop.run(r.hset("h", mapping={"f2": "v2", "n": 3})) == 2
    assert loop.run(r.hget("h", "f1")) == "v1"
    assert loop.run(r.hgetall("h")) == {"f1": "v1", "f2": "v2", "n": "3"}
    assert loop.run(r.hgetall("nohash")) == {}
    assert loop.run(r.rpush("l", "b", "c")) == 2
    assert loop.run(r.lpush("l", "a")) == 3
    assert loop.run(r.lrange("l", 0, -1)) == ["a", "b", "c"]
    assert loop.run(r.lpop("l")) == "a"
    assert raw.lrange("h14test:l", 0, -1) == ["b", "c"]
    raw.sadd("h14test:s", "x")
    assert loop.run(r.sismember("s", "x")) is True
    assert loop.run(r.sismember("s", "y")) is False


def test_scripts(r, loop):
    script = "return redis.call('SET', KEYS[1], ARGV[1])"
    assert loop.run(r.eval(script, ["scripted"], "v")) is True or loop.run(r.get("scripted")) == "v"
    assert loop.run(r.get("scripted")) == "v"
    sha = loop.run(r.script_load("return ARGV[1] .. KEYS[1]"))
    assert len(sha) == 40
    # keys get the prefix; redis-py's numkeys style works too
    assert loop.run(r.evalsha(sha, 1, "k", "pre-")) == "pre-h14test:k"


def test_pipeline(r, raw, loop):
    async def go():
        pipe = r.pipeline()
        pipe.set("p1", "a").incr("p2").get("p1").hgetall("nohash")
        return await pipe.execute()

    assert loop.run(go()) == [True, 1, "a", {}]
    assert raw.get("h14test:p2") == "1"

    async def atomic():
        async with r.pipeline(transaction=True) as pipe:
            pipe.incr("p2")
            pipe.incr("p2")
            return await pipe.execute()

    assert loop.run(atomic()) == [2, 3]


def test_pubsub_async_iterator(r, loop):
    async def go():
        sub = await r.subscribe("h14test-chan")
        received = []

        async def reader():
            async for msg in sub:
                received.append((msg.channel, msg.data))
                if len(received) == 2:
                    break

        task = asyncio.ensure_future(reader())
        assert await r.publish("h14test-chan", "one") == 1
        await r.publish("h14test-chan", "two")
        await asyncio.wait_for(task, 5)
        await sub.aclose()
        return received

    assert loop.run(go()) == [("h14test-chan", "one"), ("h14test-chan", "two")]


def test_database_number_and_password_fields(raw, loop):
    r3 = Redis(RedisConfig(url=REDIS_URL, database=3, key_prefix="h14test:"))
    loop.run(r3.set("db3", "x"))
    assert raw.get("h14test:db3") is None
    other = redis_py.Redis.from_url(REDIS_URL + "/3", decode_responses=True)
    assert other.get("h14test:db3") == "x"
    other.delete("h14test:db3")
    other.close()
    wrong = Redis(RedisConfig(url=REDIS_URL, password="not-the-password"))
    with pytest.raises(Exception, match="(?i)auth|password"):
        loop.run(wrong.get("x"))


def test_unreachable_is_redis_unavailable(loop):
    dead = Redis(RedisConfig(url="redis://127.0.0.1:1", connection_timeout_secs=1))
    started = time.monotonic()
    with pytest.raises(RedisUnavailable):
        loop.run(dead.get("x"))
    assert time.monotonic() - started < 5


def test_cluster_and_sentinel_configuration_errors():
    with pytest.raises(ValueError, match="only database 0"):
        Redis(RedisConfig(url="redis://127.0.0.1:7000", cluster_mode=True, database=2))
    with pytest.raises(ValueError, match="cluster seed nodes"):
        Redis(RedisConfig(url="redis://127.0.0.1:7000,redis://127.0.0.1:7001"))
    with pytest.raises(ValueError, match="master's name"):
        Redis(RedisConfig(url="redis+sentinel://127.0.0.1:26379"))
    with pytest.raises(ValueError, match="exclude each other"):
        Redis(RedisConfig(url="redis+sentinel://127.0.0.1:26379/mymaster", cluster_mode=True))
    # A valid Sentinel configuration: asks the Sentinels on first use (test_redis_sentinel.py).
    Redis(RedisConfig(url="redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster"))
    with pytest.raises(ValueError, match="bad Redis URL"):
        Redis(RedisConfig(url="http://nope"))
    cfg = RedisConfig.cluster("redis://127.0.0.1:7000,redis://127.0.0.1:7001")
    assert cfg.cluster_mode is True and cfg.pool_size == 20
    Redis(cfg)  # a valid cluster configuration: connects on first use


def test_request_redis_in_an_app(serve, raw):
    app = serve("database_app", env={"DB_URL": "sqlite://:memory:", "REDIS_URL": REDIS_URL})
    with httpx.Client(base_url=app.base_url, timeout=10) as c:
        raw.delete("dbapp:h14test-hits")
        assert c.get("/redis/h14test-hits").json() == {"value": "1", "same": True}
        assert c.get("/redis/h14test-hits").json()["value"] == "2"
        assert c.get("/health/ready").status_code == 200
        # Depends("redis"): the singleton registered by enable_redis.
        assert c.get("/redis-di/h14test-di").json() == {"value": "via-depends", "same": True}
    assert raw.get("dbapp:h14test-di") == "via-depends"
    raw.delete("dbapp:h14test-hits", "dbapp:h14test-di")


def test_min_idle_and_idle_timeout(raw, loop):
    r = Redis(RedisConfig(url=REDIS_URL, key_prefix="h14test:", pool_size=4, min_idle=1, idle_timeout_secs=0.5))
    assert r.open_connections() == 0  # nothing before the first command

    async def burst():
        await asyncio.gather(*(r.incr("idle") for _ in range(8)))

    loop.run(burst())
    assert r.open_connections() == 4

    async def wait_idle():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and r.open_connections() > 1:
            await asyncio.sleep(0.05)

    loop.run(wait_idle())
    assert r.open_connections() == 1  # min_idle stays open
    assert loop.run(r.get("idle")) == "8"


def test_decode_false_gives_bytes_and_close(raw, loop):
    rb = Redis(RedisConfig(url=REDIS_URL, key_prefix="h14test:"), decode=False)

    async def go():
        await rb.set("bin", b"\x00\xffraw")
        await rb.hset("binh", "f", "v")
        await rb.rpush("binl", "a", "b")
        got = (await rb.get("bin"), await rb.hgetall("binh"), await rb.lrange("binl"))
        pipe = rb.pipeline()
        pipe.get("bin")
        piped = await pipe.execute()
        await rb.close()
        return got, piped

    got, piped = loop.run(go())
    assert got == (b"\x00\xffraw", {b"f": b"v"}, [b"a", b"b"])
    assert piped == [b"\x00\xffraw"]
    assert raw.exists("h14test:bin") == 1
    # After close() the client refuses commands with a clear error.
    with pytest.raises(InterfaceError):
        loop.run(rb.get("bin"))


def test_tls_is_honoured(loop):
    """tls=True talks TLS (rediss://): against this plain-text server it fails, never
    silently falls back to plain text."""
    require(6379, "Redis")
    r = Redis(RedisConfig(url=REDIS_URL, tls=True, connection_timeout_secs=2))
    started = time.monotonic()
    with pytest.raises(RedisError):
        loop.run(r.get("x"))
    assert time.monotonic() - started < 6
