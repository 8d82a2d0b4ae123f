"""Lifespan beside on_event, app.state, url_for, and the TestClient as a context manager."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from cello import App, Depends
from cello.testing import TestClient


def test_lifespan_and_events_over_a_socket(serve):
    server = serve("lifespan_app", fresh=True)
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        body = http.get("/state").json()
    assert body == {
        "db": {"connected": True},
        "pool": "ready",  # yielded by the lifespan: merged into app.state
        "started": True,
        "events": ["lifespan:enter", "startup"],
    }
    assert server.stop() == 0
    log = server.log()
    # Shutdown hooks run before the lifespan exits (mirror image of startup).
    assert log.index("event shutdown") < log.index("event lifespan:exit")


def test_url_for(serve):
    server = serve("lifespan_app")
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        links = http.get("/links").json()
        assert links == {"user": "/users/7", "files": "/files/a%20b/c.txt?v=2", "state": "/state"}
        assert http.get(links["user"]).json() == {"id": 7}
        assert http.get(links["files"]).json() == {"rest": "a b/c.txt"}


def test_url_for_errors():
    app = App()

    @app.get("/items/{item_id}")
    def item(item_id: int):
        return {}

    with pytest.raises(ValueError, match="needs item_id"):
        app.url_for("item")
    with pytest.raises(LookupError, match="no route named"):
        app.url_for("nope")


def test_testclient_context_manager_runs_lifespan(load_app):
    mod = load_app("lifespan_app")
    mod.EVENTS.clear()
    with TestClient(mod.app) as client:
        assert mod.EVENTS == ["lifespan:enter", "startup"]
        assert client.get("/state").json()["pool"] == "ready"
    assert mod.EVENTS == ["lifespan:enter", "startup", "shutdown", "lifespan:exit"]


def test_testclient_reraises_handler_exceptions(load_app):
    app = load_app("lifespan_app").app
    with TestClient(app) as client, pytest.raises(KeyError, match="missing"):
        client.get("/boom")
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"


def test_testclient_does_not_raise_handled_errors():
    from cello import HTTPException

    app = App()

    class Teapot(Exception):
        pass

    @app.exception_handler(Teapot)
    def teapot(request, exc):
        return {"tea": True}, 418

    @app.get("/teapot")
    def h():
        raise Teapot()

    @app.get("/http")
    def h2():
        raise HTTPException(404, "gone")

    with TestClient(app) as client:
        assert client.get("/teapot").status_code == 418
        assert client.get("/http").status_code == 404


def test_testclient_honours_dependency_overrides():
    app = App()

    def get_db():
        return "real"

    @app.get("/")
    def h(db: str = Depends(get_db)):
        return {"db": db}

    app.dependency_overrides[get_db] = lambda: "fake"
    with TestClient(app) as client:
        assert client.get("/").json() == {"db": "fake"}
    app.dependency_overrides.clear()
    with TestClient(app) as client:
        assert client.get("/").json() == {"db": "real"}


def test_lifespan_failure_surfaces_in_the_test():
    @contextlib.asynccontextmanager
    async def broken(app):
        raise RuntimeError("no database")
        yield

    app = App(lifespan=broken)
    with pytest.raises(RuntimeError, match="no database"), TestClient(app):
        pass
