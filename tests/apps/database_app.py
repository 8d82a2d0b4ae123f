"""The data layer in an app, served for the black-box tests of issue 14.

Environment: DB_URL (default: the embedded SQLite), POOL_SIZE, CONN_TIMEOUT, HANDLER_TIMEOUT,
APP_NAME (PostgreSQL application_name), REDIS_URL (enables Redis), TABLE (the table name).
"""

import asyncio
import os

from cello import App, Depends, Request
from cello.config import DatabaseConfig, HealthCheckConfig, RedisConfig, TimeoutConfig
from cello.database import Database, UniqueViolation, transactional

if os.environ.get("DB_CWD"):
    os.chdir(os.environ["DB_CWD"])  # where the default sqlite://cello.db is created
app = App()
TABLE = os.environ.get("TABLE", "dba_items")
url = os.environ.get("DB_URL")
cfg = None
if url:
    cfg = DatabaseConfig(
        url,
        pool_size=int(os.environ.get("POOL_SIZE", "5")),
        connection_timeout_secs=float(os.environ.get("CONN_TIMEOUT", "5")),
        application_name=os.environ.get("APP_NAME") or None,
    )
db = app.enable_database(cfg)
if os.environ.get("REDIS_URL"):
    app.enable_redis(RedisConfig(url=os.environ["REDIS_URL"], key_prefix="dbapp:"))
app.enable_health_checks(HealthCheckConfig(timeout_secs=3))
app.enable_prometheus()
app.set_timeouts(TimeoutConfig(handler=float(os.environ.get("HANDLER_TIMEOUT", "30"))))
AUTO = {"postgresql": "SERIAL PRIMARY KEY", "mysql": "INTEGER PRIMARY KEY AUTO_INCREMENT"}.get(
    db.backend, "INTEGER PRIMARY KEY AUTOINCREMENT"
)


@app.on_event("startup")
async def schema():
    await db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id {AUTO}, name VARCHAR(100) NOT NULL UNIQUE)")


@app.get("/plain")
def plain():
    return "ok"


@app.post("/items")
async def create(request: Request):
    name = request.json()["name"]
    # An unhandled UniqueViolation answers 409 problem+json.
    await db.execute(f"INSERT INTO {TABLE} (name) VALUES ($1)", name)
    return await db.fetch_one(f"SELECT id, name FROM {TABLE} WHERE name = $1", name)


@app.post("/items/handled")
async def create_handled(request: Request):
    try:
        await db.execute(f"INSERT INTO {TABLE} (name) VALUES ($1)", request.json()["name"])
    except UniqueViolation as e:
        return {"conflict": e.constraint is not None or True, "sqlstate": e.sqlstate}
    return {"ok": True}


@app.get("/items")
async def list_items():
    return await db.fetch_all(f"SELECT id, name FROM {TABLE} ORDER BY id")


@app.get("/count")
async def count(prefix: str = ""):
    return {"count": await db.fetch_val(f"SELECT COUNT(*) FROM {TABLE} WHERE name LIKE $1", prefix + "%")}


@app.post("/tx/fail")
async def tx_fail(request: Request):
    async with db.begin():
        await db.execute(f"INSERT INTO {TABLE} (name) VALUES ($1)", request.json()["name"])
        raise RuntimeError("boom")


@app.post("/tx/slow")
async def tx_slow(request: Request):
    # Inserts, then outlives the handler timeout: cancelled, rolled back.
    async with db.begin() as tx:
        await tx.execute(f"INSERT INTO {TABLE} (name) VALUES ($1)", request.json()["name"])
        await asyncio.sleep(float(request.json().get("sleep", 5)))
    return {"finished": True}


@app.post("/tx/hold")
async def tx_hold(seconds: float = 1.0):
    # Keeps a pooled connection busy for `seconds`.
    async with db.begin():
        await db.fetch_val("SELECT 1")
        await asyncio.sleep(seconds)
    return {"held": seconds}


@app.post("/di")
async def with_di(request: Request, database: Database = Depends("database")):
    await database.execute(f"INSERT INTO {TABLE} (name) VALUES ($1)", request.json()["name"])
    return {"same": database is db}


@app.post("/transactional")
@transactional
async def decorated(request: Request):
    body = request.json()
    await db.execute(f"INSERT INTO {TABLE} (name) VALUES ($1)", body["name"])
    if body.get("fail"):
        raise RuntimeError("rolled back")
    return {"ok": True}


@app.get("/query")
async def query(n: int = 1):
    return {"v": await db.fetch_val("SELECT $1", n)}


@app.get("/conn-id")
async def conn_id():
    # The server-side id of the connection that runs the query (one per pool of size 1).
    sql = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}.get(db.backend, "SELECT 0")
    return {"id": await db.fetch_val(sql)}


@app.get("/bad-sql")
async def bad_sql():
    # An unhandled DatabaseError that is neither integrity nor availability: 500.
    return await db.fetch_all("SELEC nothing")


@app.get("/stats")
def stats():
    return db.stats()


@app.get("/redis/{key}")
async def redis_get(request: Request, key: str):
    await request.redis.incr(key)
    return {"value": await request.redis.get(key), "same": request.redis is app.redis}


@app.get("/redis-di/{key}")
async def redis_di(key: str, r=Depends("redis")):
    await r.set(key, "via-depends")
    return {"value": await app.redis.get(key), "same": r is app.redis}


if __name__ == "__main__":
    app.run()
