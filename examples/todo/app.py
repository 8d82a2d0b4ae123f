"""A to-do CRUD API on the data layer: the embedded SQLite (``cello.db``) by default, PostgreSQL
(or MySQL) when ``DATABASE_URL`` is set. The migrations in ``migrations/`` run at startup.

    python examples/todo/app.py                      # SQLite: ./cello.db
    DATABASE_URL=postgresql://postgres@127.0.0.1/test python examples/todo/app.py
"""

import os
from pathlib import Path

from cello import App, HTTPException, Request, Response
from cello.config import DatabaseConfig, HealthCheckConfig
from cello.database import migrate

app = App()
url = os.environ.get("DATABASE_URL")
db = app.enable_database(DatabaseConfig(url) if url else None)
app.enable_health_checks(HealthCheckConfig())


@app.on_event("startup")
async def apply_migrations():
    applied = await migrate(db, Path(__file__).parent / "migrations")
    if applied:
        print(f"applied migrations: {', '.join(applied)}", flush=True)


def _todo(row):
    return None if row is None else {"id": row["id"], "title": row["title"], "done": bool(row["done"])}


@app.get("/todos")
async def list_todos(done: bool | None = None):
    if done is None:
        rows = await db.fetch_all("SELECT id, title, done FROM todos ORDER BY id")
    else:
        rows = await db.fetch_all("SELECT id, title, done FROM todos WHERE done = $1 ORDER BY id", done)
    return [_todo(r) for r in rows]


@app.post("/todos")
async def create_todo(request: Request):
    body = request.json()
    title = body.get("title") if isinstance(body, dict) else None
    if not isinstance(title, str) or not title.strip():
        raise HTTPException(422, "title: a non-empty string is required")
    async with db.begin():
        await db.execute("INSERT INTO todos (title, done) VALUES ($1, $2)", title.strip(), False)
        row = await db.fetch_one("SELECT id, title, done FROM todos ORDER BY id DESC LIMIT 1")
    return Response.json(_todo(row), status=201)


@app.get("/todos/{todo_id:int}")
async def get_todo(todo_id: int):
    row = await db.fetch_one("SELECT id, title, done FROM todos WHERE id = $1", todo_id)
    if row is None:
        raise HTTPException(404, f"no todo {todo_id}")
    return _todo(row)


@app.patch("/todos/{todo_id:int}")
async def update_todo(todo_id: int, request: Request):
    body = request.json()
    if not isinstance(body, dict):
        raise HTTPException(422, "a JSON object is required")
    async with db.begin():
        row = await db.fetch_one("SELECT id, title, done FROM todos WHERE id = $1", todo_id)
        if row is None:
            raise HTTPException(404, f"no todo {todo_id}")
        title = body.get("title", row["title"])
        done = bool(body.get("done", row["done"]))
        await db.execute("UPDATE todos SET title = $1, done = $2 WHERE id = $3", title, done, todo_id)
    return {"id": todo_id, "title": title, "done": done}


@app.delete("/todos/{todo_id:int}")
async def delete_todo(todo_id: int):
    if await db.execute("DELETE FROM todos WHERE id = $1", todo_id) == 0:
        raise HTTPException(404, f"no todo {todo_id}")
    return Response(status=204)


if __name__ == "__main__":
    app.run()
