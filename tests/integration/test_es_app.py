"""The patterns in an app: /health/ready is 503 while the event store or saga store is
unreachable; the /events and /sagas development dashboards (404 in production), with a
screenshot test in headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import uuid

import httpx
import pytest
from cello import App, observability
from cello.config import EventSourcingConfig, HealthCheckConfig, SagaConfig
from cello.database import Database
from cello.eventsourcing import Event
from cello.saga import Saga, SagaStep
from cello.testing import TestClient
from db_helpers import PG_URL, require, url_for
from es_helpers import Loop, drop_tables


@pytest.fixture(autouse=True)
def _own_checks():
    """Readiness checks of data sources are process-wide: keep this module's to itself."""
    saved = dict(observability._builtin_checks)
    observability._builtin_checks.clear()
    yield
    observability._builtin_checks.clear()
    observability._builtin_checks.update(saved)


class Proxy:
    """A TCP forwarder to 127.0.0.1:<target> that can be cut and restored (the store goes away)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        self.up = True
        self.conns: list[socket.socket] = []
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
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
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
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.sock.close()


def health_app(es_config=None, saga_url=None, prefix="cello_es_"):
    app = App()
    app.enable_health_checks(HealthCheckConfig(timeout_secs=3))
    if es_config is not None:
        app.enable_event_sourcing(es_config, table_prefix=prefix)
    if saga_url is not None:
        app.enable_sagas(SagaConfig(), url=saga_url, table_prefix=prefix)
    return app


def test_ready_while_stores_reachable(tmp_path):
    url = f"sqlite://{tmp_path}/ok.db"
    app = health_app(EventSourcingConfig(store_type="sqlite", connection_url=url), url)
    with TestClient(app) as client:
        r = client.get("/health/ready")
        assert r.status_code == 200, r.text
        assert set(r.json()["checks"]) >= {"event_store", "saga_store"}


@pytest.mark.parametrize("which", ["event_store", "saga_store"])
def test_ready_is_503_while_a_sqlite_store_is_unreachable(tmp_path, which):
    bad = f"sqlite://{tmp_path}/no/such/dir/x.db"
    good = f"sqlite://{tmp_path}/ok.db"
    es = EventSourcingConfig(store_type="sqlite", connection_url=bad if which == "event_store" else good)
    app = health_app(es, bad if which == "saga_store" else good)
    with TestClient(app) as client:
        r = client.get("/health/ready")
        assert r.status_code == 503, r.text
        checks = r.json()["checks"]
        assert checks[which]["status"] != "UP"


@pytest.mark.parametrize("which", ["event_store", "saga_store"])
def test_ready_follows_a_postgresql_store_going_away_and_back(which):
    require(5432, "PostgreSQL")
    proxy = Proxy(5432)
    prefix = f"es_{uuid.uuid4().hex[:8]}_"
    via_proxy = PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    try:
        es = EventSourcingConfig.postgresql(via_proxy if which == "event_store" else PG_URL)
        app = health_app(es, via_proxy if which == "saga_store" else PG_URL, prefix)
        with TestClient(app) as client:
            assert client.get("/health/ready").status_code == 200
            proxy.cut()
            r = client.get("/health/ready")
            assert r.status_code == 503, r.text
            assert r.json()["checks"][which]["status"] != "UP"
            proxy.restore()
            deadline = __import__("time").monotonic() + 20
            while client.get("/health/ready").status_code != 200:
                assert __import__("time").monotonic() < deadline, "ready never came back"
    finally:
        proxy.close()
        loop = Loop()

        async def clean():
            db = await Database.connect(PG_URL)
            await drop_tables(db, prefix)
            await db.close()

        loop.run(clean())
        loop.close()


# ---- dashboards -------------------------------------------------------------------------------


class Noted(Event):
    text: str


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request, tmp_path):
    """(url or None for memory, table prefix); PostgreSQL tables dropped afterwards."""
    url = None if request.param == "memory" else url_for(request.param, tmp_path)
    prefix = f"es_{uuid.uuid4().hex[:8]}_"
    yield url, prefix
    if request.param == "postgresql":
        loop = Loop()

        async def clean():
            db = await Database.connect(url)
            await drop_tables(db, prefix)
            await db.close()

        loop.run(clean())
        loop.close()


def dashboard_app(backend):
    url, prefix = backend
    app = App()
    if url is not None:
        app.enable_database(url)  # both stores live in the app's database
    store = app.enable_event_sourcing(table_prefix=prefix)
    sagas = app.enable_sagas(SagaConfig(max_retries=0, retry_delay_ms=1), table_prefix=prefix)
    assert url.startswith(store.backend) if url else store.backend == "memory"

    def boom(ctx):
        raise RuntimeError("undo exploded <b>")

    sagas.register(Saga("demo", [SagaStep("one", lambda c: None, boom), SagaStep("two", lambda c: 1 / 0)]))

    @app.post("/seed")
    async def seed():
        await store.append("agg-<1>", [Noted(text="hello <script>")])
        await store.append("agg-2", [Noted(text="again")])
        r = await sagas.execute("demo", {"n": 1}, execution_id="ex-1")
        return {"saga": r.status}

    return app


def test_dashboards_in_development(backend):
    app = dashboard_app(backend)
    with TestClient(app) as client:
        assert client.post("/seed").json() == {"saga": "compensation_failed"}
        ev = client.get("/events")
        assert ev.status_code == 200 and ev.headers["content-type"].startswith("text/html")
        for table in ('id="aggregates"', 'id="stream"', 'id="projections"'):
            assert table in ev.text
        assert "agg-&lt;1&gt;" in ev.text and "<script>" not in ev.text
        one = client.get("/events", params={"aggregate": "agg-2"})
        assert 'id="aggregate-events"' in one.text and "again" in one.text
        sg = client.get("/sagas")
        assert sg.status_code == 200 and 'id="executions"' in sg.text
        assert "ex-1" in sg.text and "compensation_failed" in sg.text and "undo exploded &lt;b&gt;" in sg.text
        assert 'action="/sagas/ex-1/retry"' in sg.text
        r = client.post("/sagas/ex-1/retry")
        assert r.status_code == 303 and r.headers["location"] == "/sagas"
        assert client.post("/sagas/nope/retry").status_code == 404
        assert "http://" not in ev.text and "https://" not in sg.text  # nothing fetched from the internet


def test_dashboards_absent_in_production(backend):
    app = dashboard_app(backend)
    with TestClient(app, debug=False) as client:
        client.post("/seed")
        for path in ("/events", "/sagas"):
            r = client.get(path)
            assert r.status_code == 404
            assert r.headers["content-type"].startswith("application/problem+json")
        assert client.post("/sagas/ex-1/retry").status_code == 404


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    reason = "Debian's chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def test_dashboards_render_in_headless_chromium(serve, tmp_path):
    browser = chromium()
    server = serve("shop_app", env={"DATABASE_URL": url_for("sqlite", tmp_path), "SHOP_PREFIX": "es_dash_"}, fresh=True)
    c = httpx.Client(base_url=server.base_url, timeout=20)
    c.post("/stock", json={"sku": "cup", "quantity": 2})
    c.post("/orders", json={"id": "d1", "sku": "cup", "quantity": 1, "price": 3, "address": "A"})
    c.post("/orders", json={"id": "d2", "sku": "cup", "quantity": 1, "price": 3, "address": "nowhere"})
    for path, table, text in (("/events", "stream", "OrderConfirmed"), ("/sagas", "executions", "compensated")):
        png = tmp_path / f"{path.strip('/')}.png"
        base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1280,900",
                f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
        dom = subprocess.run([*base, "--dump-dom", server.url(path)], capture_output=True, text=True, timeout=90)
        assert f'id="{table}"' in dom.stdout and text in dom.stdout, dom.stderr[-2000:]
        # The rendered table has rows (not the empty placeholder).
        assert dom.stdout.count("<tr>") >= 2
        shot = subprocess.run([*base, f"--screenshot={png}", server.url(path)], capture_output=True, timeout=90)
        assert png.exists() and png.stat().st_size > 5000, shot.stderr[-2000:]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unhandled_concurrency_error_is_a_409_problem(backend):
    from cello.eventsourcing import ConcurrencyError

    app = dashboard_app(backend)

    @app.post("/race")
    async def race():
        store = app.event_store
        await store.append("race-1", [Noted(text="a")], expected_version=0)
        await store.append("race-1", [Noted(text="b")], expected_version=0)

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/race")
        assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
        assert "expected version 0" in r.json()["detail"]
    assert ConcurrencyError.status_code == 409
