"""Issue 14 item 6: ``RedisConfig.cluster(...)`` against a real Redis Cluster of three masters,
started here from Debian's ``redis-server`` in cluster mode (free ports, a temporary folder),
formed with ``redis-cli --cluster create`` and stopped at the end. Keys under ``data-cl:``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
import redis as redis_py
from cello.config import RedisConfig
from cello.database import Redis
from db_helpers import Loop


def _free_cluster_port() -> int:
    """A port p with p + 10000 (the cluster bus) free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI installs redis-server and redis-cli)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        _missing("redis-server/redis-cli are not installed")
    base = tmp_path_factory.mktemp("redis-cluster")
    procs: list[subprocess.Popen] = []
    ports: list[int] = []
    try:
        for i in range(3):
            port = _free_cluster_port()
            d = base / str(i)
            d.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        server,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(d / "nodes.conf"),
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
            )
            ports.append(port)
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                try:
                    redis_py.Redis(port=port, socket_timeout=1).ping()
                    break
                except redis_py.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while True:
            infos = [redis_py.Redis(port=p).cluster("info") for p in ports]
            if all(i.get("cluster_state") == "ok" for i in infos):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not become ok: {infos}")
            time.sleep(0.1)
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def loop():
    lp = Loop()
    yield lp
    lp.close()


def test_commands_and_pipeline_across_slots(cluster, loop):
    url = ",".join(f"redis://127.0.0.1:{p}" for p in cluster[:2])  # seed nodes: any subset
    r = Redis(RedisConfig.cluster(url))
    keys = [f"data-cl:{i}" for i in range(30)]  # spread over the three masters' slots

    async def go():
        for i, k in enumerate(keys):
            assert await r.set(k, str(i)) is True
        values = [await r.get(k) for k in keys]
        assert await r.incr("data-cl:counter") == 1
        assert await r.hset("data-cl:h", mapping={"a": 1}) == 1
        assert await r.hgetall("data-cl:h") == {"a": "1"}
        pipe = r.pipeline()
        for k in keys[:10]:
            pipe.get(k)
        piped = await pipe.execute()
        return values, piped

    values, piped = loop.run(go())
    assert values == [str(i) for i in range(30)]
    assert piped == [str(i) for i in range(10)]
    # The keys really are spread over the masters, and redis-py's cluster client sees them.
    rc = redis_py.RedisCluster(host="127.0.0.1", port=cluster[0], decode_responses=True)
    assert len({rc.get_node_from_key(k).port for k in keys}) == 3
    assert rc.get("data-cl:29") == "29" and rc.get("data-cl:counter") == "1"
    rc.close()


def test_key_prefix_and_pubsub_on_a_cluster(cluster, loop):
    r = Redis(RedisConfig(url=f"redis://127.0.0.1:{cluster[0]}", cluster_mode=True, key_prefix="data-cl:p:"))

    async def go():
        await r.set("x", "1")
        sub = await r.subscribe("data-cl-chan")
        # PUBLISH reaches every node's subscribers in a cluster.
        await r.publish("data-cl-chan", "hello")
        msg = await sub.get_message(timeout=5)
        await sub.aclose()
        return await r.get("x"), msg

    got, msg = loop.run(go())
    assert got == "1"
    assert msg is not None and msg.data == "hello"
    rc = redis_py.RedisCluster(host="127.0.0.1", port=cluster[1], decode_responses=True)
    assert rc.get("data-cl:p:x") == "1"  # key_prefix applied on a cluster too
    rc.close()
