"""Issue 14 item 6: Redis Sentinel (``redis+sentinel://host:port/service``) against a real
Sentinel started here from Debian's ``redis-server``: a master, one replica and one Sentinel
on free ports in a temporary folder, stopped at the end. The client finds the master through
the Sentinel, and after a failover (``SENTINEL FAILOVER``) it finds the new master by itself.
Keys under ``data-sn:``; the shared Redis on 6379 is not used."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import pytest
import redis as redis_py
from cello.config import RedisConfig
from cello.database import Redis, RedisError
from conftest import free_port
from db_helpers import Loop

SERVICE = "data_master"


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI installs redis-server)")
    pytest.skip(reason)


def _wait(what: str, check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (redis_py.RedisError, OSError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Servers:
    def __init__(self, base) -> None:
        self.server = shutil.which("redis-server")
        self.base = base
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> int:
        port = free_port()
        d = self.base / name
        d.mkdir()
        cmd = [self.server, *args] if args and args[0].endswith(".conf") else [self.server]
        rest = args[1:] if args and args[0].endswith(".conf") else args
        self.procs[name] = subprocess.Popen(
            [
                *cmd,
                *rest,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(d),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(d / "log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_py.Redis(port=port, decode_responses=True)
        _wait(f"{name} on {port}", client.ping, 10)
        client.close()
        return port

    def kill(self, name: str) -> None:
        p = self.procs[name]
        p.kill()
        p.wait(5)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    if not shutil.which("redis-server"):
        _missing("redis-server is not installed")
    base = tmp_path_factory.mktemp("redis-sentinel")
    servers = Servers(base)
    try:
        # No 5 s wait before the replica's first sync.
        master = servers.start("master", "--repl-diskless-sync-delay", "0")
        replica = servers.start("replica", "--replicaof", "127.0.0.1", str(master))
        r = redis_py.Redis(port=replica, decode_responses=True)
        _wait("the replica to sync", lambda: r.info("replication")["master_link_status"] == "up")
        r.close()
        conf = base / "sentinel.conf"
        conf.write_text(
            f"sentinel monitor {SERVICE} 127.0.0.1 {master} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        port = servers.start("sentinel", str(conf), "--sentinel")
        s = redis_py.Redis(port=port, decode_responses=True)
        # The Sentinel knows the replica before a failover can pick it.
        _wait("the Sentinel to see the replica", lambda: len(s.sentinel_slaves(SERVICE)) == 1)
        s.close()
        yield {"master": master, "replica": replica, "sentinel": port, "servers": servers}
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def loop():
    lp = Loop()
    yield lp
    lp.close()


def test_the_master_is_found_through_the_sentinel_and_after_a_failover(sentinel, loop):
    r = Redis(
        RedisConfig(
            url=f"redis+sentinel://127.0.0.1:{sentinel['sentinel']}/{SERVICE}",
            key_prefix="data-sn:",
            pool_size=2,
            connection_timeout_secs=2,
        )
    )
    assert loop.run(r.set("k", "before")) is True
    assert loop.run(r.get("k")) == "before"
    master = redis_py.Redis(port=sentinel["master"], decode_responses=True)
    assert master.get("data-sn:k") == "before"  # written on the master the Sentinel named
    master.close()

    s = redis_py.Redis(port=sentinel["sentinel"], decode_responses=True)

    def failover() -> bool:
        # NOGOODSLAVE until the Sentinel has the replica's own INFO (moments after start).
        try:
            return s.execute_command("SENTINEL", "FAILOVER", SERVICE) in (True, "OK", b"OK")
        except redis_py.ResponseError as e:
            if "NOGOODSLAVE" in str(e):
                return False
            raise

    _wait("the Sentinel to accept a failover", failover)
    _wait(
        "the Sentinel to name the replica as master",
        lambda: int(s.sentinel_get_master_addr_by_name(SERVICE)[1]) == sentinel["replica"],
    )
    s.close()
    new = redis_py.Redis(port=sentinel["replica"], decode_responses=True)
    _wait("the promoted replica to take writes", lambda: new.info("replication")["role"] == "master")
    # The old master is gone, as in a real failover.
    sentinel["servers"].kill("master")

    # The pooled connections still point at the old master: a failing command makes the
    # client ask the Sentinel again.
    async def write_after_failover():
        started = time.monotonic()
        errors = []
        while time.monotonic() < started + 20:
            try:
                await r.set("k", "after")
                return errors, time.monotonic() - started
            except RedisError as e:
                errors.append(str(e))
                await asyncio.sleep(0.05)
        raise AssertionError(f"no write reached the new master: {errors}")

    errors, took = loop.run(write_after_failover(), timeout=30)
    # Commands fail while the client finds the new master (how many depends on the machine's
    # load: a loaded CI box saw a second of refusals), then it is found within seconds.
    assert took < 10, (took, errors)
    assert new.get("data-sn:k") == "after"
    assert loop.run(r.get("k")) == "after"
    new.delete("data-sn:k")
    new.close()
    loop.run(r.close())


def test_an_unknown_service_is_a_clear_error(sentinel, loop):
    r = Redis(RedisConfig(url=f"redis+sentinel://127.0.0.1:{sentinel['sentinel']}/nope", connection_timeout_secs=2))
    with pytest.raises(RedisError, match="(?i)master"):
        loop.run(r.get("x"))
