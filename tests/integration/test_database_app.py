"""Issue 14 items 3, 4, 5 and 7 over real sockets: ``tests/apps/database_app.py`` served on
PostgreSQL (table ``dba_items``) and on the embedded SQLite default.

- transactions in handlers: rollback on exception, on handler timeout; ``Depends("database")``;
  ``@transactional``;
- unhandled errors as problem+json: 409 for integrity, 503 for pool exhaustion/unreachable;
- pool metrics in ``/metrics``; ``/health/ready`` 503 while the database is unreachable (through
  a TCP relay the test cuts) and 200 again by itself; reconnect after ``pg_terminate_backend``;
- 1,000 concurrent requests that each run a query, with a plain route responsive meanwhile;
- on MariaDB (``data_my_*``): the same app, reconnect after ``KILL``, readiness through a relay.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
from cello.database import Database
from db_helpers import MYSQL_URL, PG_URL, Loop, require


class Relay:
    """A TCP relay to a database server (PostgreSQL by default) that the test can cut (closing
    every connection) and restore."""

    def __init__(self, target_port: int = 5432) -> None:
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.up = True
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.up = False
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.up = True


@pytest.fixture(scope="module")
def pg_app(serve):
    require(5432, "PostgreSQL")
    return serve(
        "database_app",
        env={
            "DB_URL": PG_URL,
            "POOL_SIZE": "5",
            "CONN_TIMEOUT": "10",
            "HANDLER_TIMEOUT": "1",
            "APP_NAME": "cello-h14-app",
        },
    )


@pytest.fixture(scope="module")
def client(pg_app):
    with httpx.Client(base_url=pg_app.base_url, timeout=30) as c:
        # The port accepts as soon as it is bound, before the startup hooks run; the first
        # answer comes only after them, so the table exists from here on.
        assert c.get("/plain").status_code == 200
        loop = Loop()
        admin = Database(PG_URL)
        loop.run(admin.execute("DELETE FROM dba_items"))  # created by the app's startup hook
        loop.run(admin.close())
        loop.close()
        yield c


def count(client, prefix):
    return client.get("/count", params={"prefix": prefix}).json()["count"]


def test_crud_and_409_for_a_unique_violation(client):
    r = client.post("/items", json={"name": "crud-1"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "crud-1" and isinstance(r.json()["id"], int)
    r = client.post("/items", json={"name": "crud-1"})
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 409 and body["constraint"] == "dba_items_name_key" and body["sqlstate"] == "23505"
    # Handled in the handler: whatever it returns.
    assert client.post("/items/handled", json={"name": "crud-1"}).json()["sqlstate"] == "23505"


def test_other_database_errors_are_500_problems(client):
    r = client.get("/bad-sql")
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 500
    # The worker lives on.
    assert client.get("/plain").status_code == 200


def test_exception_in_transaction_rolls_back(client):
    r = client.post("/tx/fail", json={"name": "txfail-1"})
    assert r.status_code == 500
    assert count(client, "txfail-") == 0


def test_handler_timeout_rolls_back_and_frees_the_connection(client):
    r = client.post("/tx/slow", json={"name": "slow-1", "sleep": 5})
    assert r.status_code == 504
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and client.get("/stats").json()["in_use"] != 0:
        time.sleep(0.05)
    assert client.get("/stats").json()["in_use"] == 0
    assert count(client, "slow-") == 0


def test_client_disconnect_rolls_back(pg_app, client):
    with socket.create_connection((pg_app.host, pg_app.port)) as s:
        body = json.dumps({"name": "gone-1", "sleep": 0.8}).encode()
        s.sendall(
            b"POST /tx/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.2)
    # The handler was cancelled before it could finish: nothing committed, connection back.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and client.get("/stats").json()["in_use"] != 0:
        time.sleep(0.05)
    time.sleep(1.0)
    assert count(client, "gone-") == 0


def test_depends_database_and_transactional(client):
    assert client.post("/di", json={"name": "di-1"}).json() == {"same": True}
    assert client.post("/transactional", json={"name": "dec-1"}).json() == {"ok": True}
    assert client.post("/transactional", json={"name": "dec-2", "fail": True}).status_code == 500
    assert count(client, "di-") == 1 and count(client, "dec-") == 1


def test_pool_metrics(client):
    client.get("/query")
    text = client.get("/metrics").text
    for name in (
        "cello_db_pool_size",
        "cello_db_pool_idle",
        "cello_db_pool_in_use",
        "cello_db_pool_max",
        "cello_db_pool_wait_seconds_total",
        "cello_db_pool_acquires_total",
    ):
        assert (
            f'{name}{{backend="postgresql",pool="default"}}' in text
            or f'{name}{{pool="default",backend="postgresql"}}' in text
        ), name
    assert "cello_db_pool_max{" in text and "} 5" in text.split("cello_db_pool_max{", 1)[1].split("\n", 1)[0]


def test_reconnect_after_pg_terminate_backend(client):
    loop = Loop()
    admin = Database(PG_URL)
    try:
        assert client.get("/query", params={"n": 1}).json() == {"v": 1}
        killed = loop.run(
            admin.fetch_val(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                "cello-h14-app",
            )
        )
        assert killed >= 1
        r = client.get("/query", params={"n": 2})
        assert r.status_code == 200 and r.json() == {"v": 2}
    finally:
        loop.run(admin.close())
        loop.close()


# PostgreSQL, MariaDB and a SQLite file (port, URL, table created by the app's startup hook).
SERVERS = {
    "postgresql": (5432, PG_URL, "dba_items"),
    "mysql": (3306, MYSQL_URL, "data_my_items"),
    "sqlite": (None, None, "dba_items"),
}


def server_url(backend: str, tmp_path) -> tuple[str, str]:
    port, url, table = SERVERS[backend]
    if port is None:
        return f"sqlite://{tmp_path}/pool.db", table
    require(port, backend)
    return url, table


@pytest.mark.parametrize("backend", list(SERVERS))
def test_pool_exhaustion_is_503_after_connection_timeout(serve, backend, tmp_path):
    url, table = server_url(backend, tmp_path)
    app = serve("database_app", env={"DB_URL": url, "POOL_SIZE": "1", "CONN_TIMEOUT": "0.5", "TABLE": table})

    async def go():
        async with httpx.AsyncClient(base_url=app.base_url, timeout=10) as c:
            hold = asyncio.ensure_future(c.post("/tx/hold", params={"seconds": 2}))
            await asyncio.sleep(0.4)
            started = time.monotonic()
            r = await c.get("/query")
            waited = time.monotonic() - started
            plain = await c.get("/plain")
            return r, waited, plain, await hold

    r, waited, plain, held = asyncio.run(go())
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert 0.4 <= waited < 2.0
    assert plain.status_code == 200
    assert held.status_code == 200


@pytest.mark.parametrize("backend", list(SERVERS))
def test_1000_concurrent_queries_queue_for_the_pool(serve, backend, tmp_path):
    url, table = server_url(backend, tmp_path)
    app = serve("database_app", env={"DB_URL": url, "POOL_SIZE": "5", "CONN_TIMEOUT": "20", "TABLE": table})

    async def get(path: str) -> tuple[int, bytes]:
        # A bare HTTP/1.1 client: httpx's own cost for 1,000 connections in this process
        # would be what the test measures.
        r, w = await asyncio.open_connection(app.host, app.port)
        w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await r.read()
        w.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    async def go():
        queries = [asyncio.ensure_future(get(f"/query?n={i}")) for i in range(1000)]
        # While they queue for the pool's 5 connections, a plain route keeps answering.
        plain_s = []
        while not all(q.done() for q in queries) or not plain_s:
            started = time.monotonic()
            status, _ = await get("/plain")
            assert status == 200
            plain_s.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
        return await asyncio.gather(*queries), plain_s

    started = time.monotonic()
    done, plain_s = asyncio.run(go())
    total = time.monotonic() - started
    assert [status for status, _ in done] == [200] * 1000
    assert [json.loads(body)["v"] for _, body in done] == list(range(1000))
    print(f"1000 queries in {total:.2f} s; plain route: {len(plain_s)} requests, slowest {max(plain_s):.3f} s")
    assert max(plain_s) < 2.0, plain_s


def readiness_follows_the_relay(c: httpx.Client, relay: Relay, n: int) -> None:
    """Ready while the database is reachable; 503 (and 503 problem+json for queries) once the
    relay is cut; ready again by itself once it is restored."""

    def wait_for(status: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        got = None
        while time.monotonic() < deadline:
            got = c.get("/health/ready").status_code
            if got == status:
                return
            time.sleep(0.1)
        assert got == status

    assert c.get("/health/ready").status_code == 200
    relay.cut()
    wait_for(503, 10)
    r = c.get("/query")
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
    relay.restore()
    wait_for(200, 15)
    assert c.get("/query", params={"n": n}).json() == {"v": n}


def test_ready_is_503_while_unreachable_and_recovers(serve):
    require(5432, "PostgreSQL")
    relay = Relay()
    url = PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    app = serve("database_app", env={"DB_URL": url, "CONN_TIMEOUT": "1", "TABLE": "dba_items"}, fresh=True)
    with httpx.Client(base_url=app.base_url, timeout=10) as c:
        readiness_follows_the_relay(c, relay, n=7)


def test_sqlite_transactions_roll_back_on_exception_timeout_and_disconnect(serve, tmp_path):
    """Item 3 on the embedded backend: the same rollbacks as on PostgreSQL, and the
    connection goes back to the pool each time."""
    app = serve(
        "database_app",
        env={"DB_URL": f"sqlite://{tmp_path}/tx.db", "POOL_SIZE": "5", "HANDLER_TIMEOUT": "1", "TABLE": "dba_items"},
    )

    def settle(c):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and c.get("/stats").json()["in_use"] != 0:
            time.sleep(0.05)
        assert c.get("/stats").json()["in_use"] == 0

    with httpx.Client(base_url=app.base_url, timeout=30) as c:
        assert c.get("/stats").json()["backend"] == "sqlite"
        assert c.post("/tx/fail", json={"name": "txfail-1"}).status_code == 500
        assert count(c, "txfail-") == 0
        assert c.post("/tx/slow", json={"name": "slow-1", "sleep": 5}).status_code == 504
        settle(c)
        assert count(c, "slow-") == 0
        with socket.create_connection((app.host, app.port)) as s:
            body = json.dumps({"name": "gone-1", "sleep": 0.8}).encode()
            s.sendall(
                b"POST /tx/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.2)
        settle(c)
        time.sleep(1.0)
        assert count(c, "gone-") == 0
        # The write lock of the rolled-back transactions is gone: a new write commits.
        assert c.post("/items", json={"name": "after-1"}).status_code == 200
        assert count(c, "after-") == 1


def test_sqlite_default_when_no_config(serve, tmp_path):
    app = serve("database_app", env={"DB_URL": "", "TABLE": "dba_items", "DB_CWD": str(tmp_path)})
    with httpx.Client(base_url=app.base_url, timeout=10) as c:
        assert c.post("/items", json={"name": "lite-1"}).status_code == 200
        assert (tmp_path / "cello.db").exists()
        assert c.post("/items", json={"name": "lite-1"}).status_code == 409
        assert c.get("/stats").json()["backend"] == "sqlite"


def test_the_same_app_on_mariadb(serve):
    """Items 3, 4 and 5 over HTTP on MariaDB (table ``data_my_items``)."""
    require(3306, "MariaDB")
    url = MYSQL_URL
    admin_loop = Loop()
    admin = Database(url)
    admin_loop.run(admin.execute("DROP TABLE IF EXISTS data_my_items"))
    admin_loop.run(admin.close())
    admin_loop.close()
    app = serve(
        "database_app",
        env={"DB_URL": url, "POOL_SIZE": "3", "HANDLER_TIMEOUT": "1", "TABLE": "data_my_items"},
        fresh=True,
    )
    with httpx.Client(base_url=app.base_url, timeout=30) as c:
        assert c.post("/items", json={"name": "my-1"}).status_code == 200
        r = c.post("/items", json={"name": "my-1"})
        assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["sqlstate"] == "23000"
        assert c.post("/tx/fail", json={"name": "my-fail"}).status_code == 500
        assert c.post("/tx/slow", json={"name": "my-slow", "sleep": 5}).status_code == 504
        assert c.post("/di", json={"name": "my-di"}).json() == {"same": True}
        assert c.post("/transactional", json={"name": "my-dec", "fail": True}).status_code == 500
        assert c.get("/bad-sql").status_code == 500
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and c.get("/stats").json()["in_use"] != 0:
            time.sleep(0.05)
        assert c.get("/stats").json()["in_use"] == 0
        assert c.get("/count", params={"prefix": "my-"}).json()["count"] == 2  # my-1, my-di
        assert c.get("/query", params={"n": 5}).json() == {"v": 5}
        text = c.get("/metrics").text
        assert (
            'cello_db_pool_max{pool="default",backend="mysql"} 3' in text
            or 'cello_db_pool_max{backend="mysql",pool="default"} 3' in text
        )
        assert c.get("/health/ready").status_code == 200


def test_mariadb_reconnects_after_kill_and_readiness_follows_the_server(serve):
    """Item 5 on MariaDB: ``KILL`` of the pool's server-side connection (from another
    connection), then the next request succeeds on a new one; ``/health/ready`` is 503 while
    the server is unreachable (a relay the test cuts) and 200 again by itself."""
    require(3306, "MariaDB")
    relay = Relay(3306)
    url = MYSQL_URL.replace("127.0.0.1:3306", f"127.0.0.1:{relay.port}")
    app = serve(
        "database_app",
        env={"DB_URL": url, "POOL_SIZE": "1", "CONN_TIMEOUT": "1", "TABLE": "data_my_kill"},
        fresh=True,
    )
    loop = Loop()
    admin = Database(MYSQL_URL)
    try:
        with httpx.Client(base_url=app.base_url, timeout=10) as c:
            # One pooled connection: its id is the pool's.
            first = c.get("/conn-id").json()["id"]
            assert c.get("/conn-id").json()["id"] == first
            loop.run(admin.execute(f"KILL {int(first)}"))
            r = c.get("/query", params={"n": 3})
            assert r.status_code == 200 and r.json() == {"v": 3}
            assert c.get("/conn-id").json()["id"] != first

            readiness_follows_the_relay(c, relay, n=8)
    finally:
        loop.run(admin.execute("DROP TABLE IF EXISTS data_my_kill"))
        loop.run(admin.close())
        loop.close()
        relay.cut()
