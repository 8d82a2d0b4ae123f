"""Create and fill the table of the `db` benchmark endpoint (one indexed SELECT per request).

    BENCH_DB_URL=postgresql://postgres@127.0.0.1:5432/test python bench/db_setup.py

`bench_items(id INTEGER PRIMARY KEY, name TEXT)` with 10,000 rows; the endpoint reads one
row by its primary key. Uses Cello's own client so no extra driver is needed here."""

import asyncio
import os

from cello.database import Database

ROWS = 10_000


async def main() -> None:
    url = os.environ.get("BENCH_DB_URL", "postgresql://postgres@127.0.0.1:5432/test")
    db = await Database.connect(url)
    await db.execute("DROP TABLE IF EXISTS bench_items")
    await db.execute("CREATE TABLE bench_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    await db.execute_many("INSERT INTO bench_items (id, name) VALUES ($1, $2)", [(i, f"item-{i}") for i in range(ROWS)])
    await db.execute("ANALYZE bench_items")
    print(f"bench_items: {await db.fetch_val('SELECT COUNT(*) FROM bench_items')} rows")
    await db.close()


if __name__ == "__main__":
    asyncio.run(main())
