"""Issue 14 item 8: examples/todo as a real server, on the embedded SQLite default and on
PostgreSQL (``DATABASE_URL``, schema ``cello_todo``), migrations applied at startup."""

from __future__ import annotations

import httpx
from cello.database import Database
from db_helpers import PG_URL, Loop, require


def crud(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        r = c.post("/todos", json={"title": "write tests"})
        assert r.status_code == 201, r.text
        todo = r.json()
        assert todo["title"] == "write tests" and todo["done"] is False
        tid = todo["id"]
        assert c.get(f"/todos/{tid}").json() == todo
        assert c.patch(f"/todos/{tid}", json={"done": True}).json()["done"] is True
        assert c.get(f"/todos/{tid}").json()["done"] is True
        assert [t["id"] for t in c.get("/todos").json()] == [tid]
        assert c.post("/todos", json={"title": ""}).status_code == 422
        assert c.delete(f"/todos/{tid}").status_code == 204
        assert c.get(f"/todos/{tid}").status_code == 404
        assert c.delete(f"/todos/{tid}").status_code == 404
        assert c.get("/health/ready").status_code == 200


def test_todo_on_the_sqlite_default(serve, tmp_path):
    app = serve("todo_example", env={"TODO_CWD": str(tmp_path), "DATABASE_URL": ""})
    crud(app.base_url)
    assert (tmp_path / "cello.db").exists()
    assert "applied migrations: 001_todos, 002_todos_created" in app.log()


def test_todo_on_postgresql(serve):
    require(5432, "PostgreSQL")
    loop = Loop()
    admin = Database(PG_URL)
    loop.run(admin.execute("DROP SCHEMA IF EXISTS cello_todo CASCADE"))
    loop.run(admin.execute("CREATE SCHEMA cello_todo"))
    try:
        url = PG_URL + "?options=-csearch_path%3Dcello_todo"
        app = serve("todo_example", env={"DATABASE_URL": url})
        crud(app.base_url)
        assert "applied migrations: 001_todos, 002_todos_created" in app.log()
        tables = loop.run(admin.fetch_all("SELECT name FROM cello_todo.cello_migrations ORDER BY name", tuples=True))
        assert tables == [("001_todos",), ("002_todos_created",)]
        # A restart applies nothing twice.
        app.stop()
        again = serve("todo_example", env={"DATABASE_URL": url}, fresh=True)
        with httpx.Client(base_url=again.base_url, timeout=10) as c:
            assert c.get("/todos").status_code == 200
        assert "applied migrations" not in again.log()
    finally:
        loop.run(admin.close())
        loop.close()
