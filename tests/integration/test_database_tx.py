"""Issue 14 item 3: transactions on PostgreSQL, MariaDB and SQLite (table ``dbt_items``):
commit/rollback as a context manager, SAVEPOINT nesting, the published ``await db.begin()``
style, queries on ``db`` joining the open transaction, and cancellation rolling back."""

from __future__ import annotations

import asyncio
import time

import pytest
from cello.config import DatabaseConfig
from cello.database import Database, DatabaseError, InterfaceError, TransactionAborted, transactional
from db_helpers import Loop, url_for

BACKENDS = ["sqlite", "postgresql", "mysql"]


@pytest.fixture(scope="module")
def loop():
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module", params=BACKENDS)
def db(request, loop, tmp_path_factory):
    url = url_for(request.param, tmp_path_factory.mktemp(request.param))
    database = loop.run(Database.connect(DatabaseConfig(url, pool_size=3)))
    loop.run(database.execute("DROP TABLE IF EXISTS dbt_items"))
    loop.run(database.execute("CREATE TABLE dbt_items (name VARCHAR(50) PRIMARY KEY)"))
    yield database
    loop.run(database.close())


@pytest.fixture
def clean(db, loop):
    loop.run(db.execute("DELETE FROM dbt_items"))
    return db


def names(db, loop):
    return [r["name"] for r in loop.run(db.fetch_all("SELECT name FROM dbt_items ORDER BY name"))]


def test_commit_on_success_rollback_on_exception(clean, loop):
    db = clean

    async def ok():
        async with db.begin() as tx:
            await tx.execute("INSERT INTO dbt_items VALUES ($1)", "a")
            # A query on `db` inside the block runs on the transaction's connection.
            await db.execute("INSERT INTO dbt_items VALUES ($1)", "b")
            assert await db.fetch_val("SELECT COUNT(*) FROM dbt_items") == 2

    loop.run(ok())
    assert names(db, loop) == ["a", "b"]

    async def fail():
        async with db.begin():
            await db.execute("INSERT INTO dbt_items VALUES ($1)", "c")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        loop.run(fail())
    assert names(db, loop) == ["a", "b"]


def test_uncommitted_rows_invisible_to_other_connections(clean, loop):
    db = clean

    async def go():
        async with db.begin() as tx:
            await tx.execute("INSERT INTO dbt_items VALUES ($1)", "hidden")
            # Another task, outside the transaction, on another pooled connection.
            outside = asyncio.get_running_loop().create_task(db.fetch_val("SELECT COUNT(*) FROM dbt_items"))
            seen = await outside
            await tx.rollback()
        return seen

    if db.backend == "sqlite":
        pytest.skip("SQLite's writer holds the database lock (BEGIN IMMEDIATE); WAL readers see the old state")
    assert loop.run(go()) == 0
    assert names(db, loop) == []


def test_nested_savepoint_rolls_back_only_the_inner_part(clean, loop):
    db = clean

    async def go():
        async with db.begin() as outer:
            await outer.execute("INSERT INTO dbt_items VALUES ($1)", "outer")
            with pytest.raises(ValueError):
                async with outer.begin() as inner:
                    await inner.execute("INSERT INTO dbt_items VALUES ($1)", "inner")
                    raise ValueError("inner fails")
            # db.begin() inside an open transaction nests too.
            async with db.begin() as inner2:
                assert inner2.depth == 1
                await db.execute("INSERT INTO dbt_items VALUES ($1)", "inner2")

    loop.run(go())
    assert names(db, loop) == ["inner2", "outer"]


def test_published_style_commit_and_rollback(clean, loop):
    db = clean

    async def go():
        tx = await db.begin()
        await tx.execute("INSERT INTO dbt_items VALUES ($1)", "kept")
        await tx.commit()
        tx = await db.begin()
        await db.execute("INSERT INTO dbt_items VALUES ($1)", "dropped")
        await tx.rollback()
        with pytest.raises(InterfaceError):
            await tx.commit()

    loop.run(go())
    assert names(db, loop) == ["kept"]


def test_transactional_decorator(clean, loop):
    db = clean

    @transactional(database=db)
    async def add(name, fail=False):
        await db.execute("INSERT INTO dbt_items VALUES ($1)", name)
        if fail:
            raise RuntimeError("no")

    loop.run(add("t1"))
    with pytest.raises(RuntimeError):
        loop.run(add("t2", fail=True))
    assert names(db, loop) == ["t1"]


def test_cancelled_task_rolls_back_and_returns_the_connection(clean, loop):
    db = clean

    async def go():
        async def work():
            async with db.begin():
                await db.execute("INSERT INTO dbt_items VALUES ($1)", "cancelled")
                await asyncio.sleep(10)

        task = asyncio.get_running_loop().create_task(work())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Every connection is usable again (the pool has 3).
        await asyncio.gather(*(db.fetch_val("SELECT 1") for _ in range(6)))

    loop.run(go())
    assert names(db, loop) == []

    async def settled():
        # A released connection is checked (a ping) before it is idle again: poll.
        deadline = time.monotonic() + 5
        while db.stats()["in_use"] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return db.stats()

    stats = loop.run(settled())
    assert stats["in_use"] == 0, stats


def test_failed_statement_aborts_postgres_transaction(clean, loop):
    db = clean
    if db.backend != "postgresql":
        pytest.skip("only PostgreSQL aborts the whole transaction after an error")

    async def go():
        async with db.begin() as tx:
            with pytest.raises(DatabaseError):
                await tx.execute("INSERT INTO nope VALUES (1)")
            with pytest.raises(TransactionAborted):
                await tx.execute("INSERT INTO dbt_items VALUES ($1)", "x")
            await tx.rollback()

    loop.run(go())
