"""Issue 14 items 1, 2 and 4: pools, queries, type mapping and errors against real PostgreSQL,
MariaDB and SQLite (tables ``dbq_*``; PostgreSQL schema ``cello_dbq``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from decimal import Decimal

import pytest
from cello.config import DatabaseConfig
from cello.database import (
    CheckViolation,
    Database,
    DatabaseError,
    ForeignKeyViolation,
    IntegrityError,
    Json,
    NotNullViolation,
    OperationalError,
    UniqueViolation,
)
from db_helpers import Loop, url_for

BACKENDS = ["sqlite", "postgresql", "mysql"]


@pytest.fixture(scope="module")
def loop():
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module", params=BACKENDS)
def db(request, loop, tmp_path_factory):
    backend = request.param
    url = url_for(backend, tmp_path_factory.mktemp(backend))
    if backend == "postgresql":
        setup = Database(url)
        loop.run(setup.execute("CREATE SCHEMA IF NOT EXISTS cello_dbq"))
        loop.run(setup.close())
        url += "?options=-csearch_path%3Dcello_dbq"
    database = loop.run(Database.connect(DatabaseConfig(url, pool_size=4)))
    for t in ("dbq_child", "dbq_parent", "dbq_items"):
        loop.run(database.execute(f"DROP TABLE IF EXISTS {t}"))
    auto = {
        "postgresql": "id SERIAL PRIMARY KEY",
        "mysql": "id INTEGER PRIMARY KEY AUTO_INCREMENT",
        "sqlite": "id INTEGER PRIMARY KEY AUTOINCREMENT",
    }[backend]
    loop.run(
        database.execute(
            f"CREATE TABLE dbq_items ({auto}, name VARCHAR(50) NOT NULL UNIQUE, qty INTEGER CHECK (qty >= 0), "
            "price DECIMAL(10,2))"
        )
    )
    loop.run(database.execute("CREATE TABLE dbq_parent (id INTEGER PRIMARY KEY)"))
    loop.run(
        database.execute("CREATE TABLE dbq_child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES dbq_parent(id))")
    )
    yield database
    loop.run(database.close())


def test_backend_from_url(db):
    assert db.backend in BACKENDS


def test_execute_returns_rows_affected_and_fetch(db, loop):
    loop.run(db.execute("DELETE FROM dbq_items"))
    n = loop.run(
        db.execute("INSERT INTO dbq_items (name, qty, price) VALUES ($1, $2, $3)", "apple", 3, Decimal("1.25"))
    )
    assert n == 1
    n = loop.run(db.execute_many("INSERT INTO dbq_items (name, qty) VALUES (?, ?)", [("pear", 1), ("plum", 2)]))
    assert n == 2
    rows = loop.run(db.fetch_all("SELECT name, qty FROM dbq_items ORDER BY name"))
    assert [dict(r) for r in rows] == [
        {"name": "apple", "qty": 3},
        {"name": "pear", "qty": 1},
        {"name": "plum", "qty": 2},
    ]
    # Records also index by position; tuples mode gives plain tuples.
    assert rows[0][0] == "apple" and rows[0]["qty"] == 3 and rows[0][-1] == 3
    assert loop.run(db.fetch_all("SELECT name, qty FROM dbq_items ORDER BY name", tuples=True))[0] == ("apple", 3)
    one = loop.run(db.fetch_one("SELECT qty, price FROM dbq_items WHERE name = $1", "apple"))
    assert one["qty"] == 3 and one["price"] == Decimal("1.25")
    assert loop.run(db.fetch_one("SELECT * FROM dbq_items WHERE name = $1", "nope")) is None
    assert loop.run(db.fetch_val("SELECT COUNT(*) FROM dbq_items")) == 3
    assert loop.run(db.fetch_val("SELECT qty FROM dbq_items WHERE name = ?", "nope")) is None
    assert loop.run(db.execute("UPDATE dbq_items SET qty = qty + 1")) == 3


def test_dollar_placeholders_reordered_and_reused(db, loop):
    row = loop.run(db.fetch_one("SELECT $2 AS b, $1 AS a, $2 AS b2", "one", "two"))
    assert (row["a"], row["b"], row["b2"]) == ("one", "two", "two")


def test_wrong_parameter_count_is_an_error_before_sending(db, loop):
    with pytest.raises(TypeError, match="takes 2 parameters, 1 given"):
        loop.run(db.fetch_all("SELECT $1, $2", 1))
    with pytest.raises(TypeError, match="parameter \\$1: cannot send a set"):
        loop.run(db.fetch_all("SELECT $1", {1, 2}))


def test_type_round_trip(db, loop):
    aware = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    naive = dt.datetime(2024, 5, 6, 7, 8, 9)
    u = uuid.uuid4()
    mariadb = db.backend == "mysql" and "mariadb" in str(loop.run(db.fetch_val("SELECT VERSION()"))).lower()
    t = {
        "postgresql": "i BIGINT, n NUMERIC(20,6), f DOUBLE PRECISION, s TEXT, b BOOLEAN, bin BYTEA, d DATE, "
        "tm TIME, ts TIMESTAMP, tz TIMESTAMPTZ, u UUID, j JSONB, arr INTEGER[], tarr TEXT[], nul INTEGER",
        # MariaDB's UUID type (10.7+); MySQL has none.
        "mysql": "i BIGINT, n DECIMAL(20,6), f DOUBLE, s TEXT, b BOOLEAN, bin BLOB, d DATE, tm TIME(6), "
        f"ts DATETIME(6), tz TIMESTAMP(6) NULL, u {'UUID' if mariadb else 'CHAR(36)'}, j JSON, arr JSON, "
        "tarr JSON, nul INTEGER",
        "sqlite": "i INTEGER, n DECIMAL(20,6), f REAL, s TEXT, b BOOLEAN, bin BLOB, d DATE, tm TIME, ts DATETIME, "
        "tz DATETIME, u UUID, j JSON, arr JSON, tarr JSON, nul INTEGER",
    }[db.backend]
    loop.run(db.execute("DROP TABLE IF EXISTS dbq_types"))
    loop.run(db.execute(f"CREATE TABLE dbq_types ({t})"))
    cols = "i, n, f, s, b, bin, d, tm, ts, tz, u, j, arr, tarr, nul"
    params = (
        2**40,
        Decimal("12345.678901"),
        1.5,
        "héllo",
        True,
        b"\x00\xff",
        dt.date(2024, 5, 6),
        dt.time(7, 8, 9),
        naive,
        aware,
        u,
        {"a": [1, 2], "b": None},
        [1, 2, 3],
        ["x", "y"],
        None,
    )
    ph = ", ".join(f"${i}" for i in range(1, 16))
    assert loop.run(db.execute(f"INSERT INTO dbq_types ({cols}) VALUES ({ph})", *params)) == 1
    r = loop.run(db.fetch_one(f"SELECT {cols} FROM dbq_types"))
    assert r["i"] == 2**40 and isinstance(r["i"], int)
    assert r["f"] == 1.5
    assert r["s"] == "héllo"
    assert r["b"] is True
    assert r["bin"] == b"\x00\xff"
    assert r["d"] == dt.date(2024, 5, 6)
    assert r["tm"] == dt.time(7, 8, 9)
    assert r["ts"] == naive and r["ts"].tzinfo is None
    # Aware stays aware: the same instant.
    assert r["tz"].tzinfo is not None and r["tz"] == aware
    assert r["nul"] is None
    # The same Python values from every backend (a list in JSON where there are no arrays).
    assert r["n"] == Decimal("12345.678901") and isinstance(r["n"], Decimal)
    if db.backend == "mysql" and not mariadb:
        assert r["u"] == str(u)  # MySQL has no UUID type: CHAR(36)
    else:
        assert r["u"] == u and isinstance(r["u"], uuid.UUID)
    assert r["j"] == {"a": [1, 2], "b": None}
    assert r["arr"] == [1, 2, 3]
    assert r["tarr"] == ["x", "y"]
    # JSON forced for a list, and NULL into a typed column.
    assert loop.run(db.execute("UPDATE dbq_types SET j = $1, i = $2", Json([1, {"k": "v"}]), None)) == 1
    assert loop.run(db.fetch_val("SELECT i FROM dbq_types")) is None


def test_integrity_errors(db, loop):
    loop.run(db.execute("DELETE FROM dbq_items"))
    loop.run(db.execute("INSERT INTO dbq_items (name, qty) VALUES ($1, $2)", "dup", 1))
    with pytest.raises(UniqueViolation) as e:
        loop.run(db.execute("INSERT INTO dbq_items (name, qty) VALUES ($1, $2)", "dup", 1))
    assert isinstance(e.value, IntegrityError) and isinstance(e.value, DatabaseError)
    assert e.value.sqlstate
    if db.backend == "postgresql":
        assert e.value.sqlstate == "23505" and e.value.constraint == "dbq_items_name_key"
    with pytest.raises(NotNullViolation):
        loop.run(db.execute("INSERT INTO dbq_items (name, qty) VALUES ($1, $2)", None, 1))
    with pytest.raises(CheckViolation):
        loop.run(db.execute("INSERT INTO dbq_items (name, qty) VALUES ($1, $2)", "neg", -1))
    with pytest.raises(ForeignKeyViolation):
        loop.run(db.execute("INSERT INTO dbq_child (id, parent_id) VALUES ($1, $2)", 1, 999))


def test_syntax_error_is_a_database_error(db, loop):
    with pytest.raises(DatabaseError) as e:
        loop.run(db.fetch_all("SELEC nothing"))
    assert not isinstance(e.value, (IntegrityError, OperationalError))


def test_unreachable_server_is_operational(loop):
    bad = Database(DatabaseConfig("postgresql://postgres@127.0.0.1:1/test", connection_timeout_secs=1))
    with pytest.raises(OperationalError):
        loop.run(bad.fetch_val("SELECT 1"))


def test_config_errors(loop):
    with pytest.raises(ValueError, match="unsupported database URL"):
        Database("oracle://x")
    with pytest.raises(ValueError, match="application_name"):
        loop.run(Database.connect(DatabaseConfig("sqlite::memory:", application_name="x")))


def test_default_config_and_memory(loop, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = Database()
    assert db.url == "sqlite://cello.db"
    assert loop.run(db.fetch_val("SELECT 41 + 1")) == 42
    assert (tmp_path / "cello.db").exists()
    loop.run(db.close())
    mem = loop.run(Database.connect("sqlite://:memory:"))
    loop.run(mem.execute("CREATE TABLE t (x INTEGER)"))
    loop.run(mem.execute("INSERT INTO t VALUES (?)", 5))
    assert loop.run(mem.fetch_val("SELECT x FROM t")) == 5
    loop.run(mem.close())


def test_postgres_config_url_and_application_name(loop):
    url_for("postgresql", None)
    cfg = DatabaseConfig.postgres("127.0.0.1", database="test", user="postgres")
    cfg.application_name = "cello-h14-test"
    db = loop.run(Database.connect(cfg))
    assert loop.run(db.fetch_val("SELECT current_setting('application_name')")) == "cello-h14-test"
    loop.run(db.close())


def test_tls_options_in_the_url(loop):
    """TLS for PostgreSQL/MySQL is set in the URL (``sslmode``, ``ssl-mode``) and honoured."""
    pg = url_for("postgresql", None)
    ssl_on = loop.run(Database.connect(pg + "?sslmode=disable"))
    server_has_tls = loop.run(ssl_on.fetch_val("SELECT current_setting('ssl')")) == "on"
    query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    assert loop.run(ssl_on.fetch_val(query)) is False
    loop.run(ssl_on.close())
    required = Database(DatabaseConfig(pg + "?sslmode=require", connection_timeout_secs=3))
    if server_has_tls:
        assert loop.run(required.fetch_val(query)) is True
    else:
        with pytest.raises(OperationalError):
            loop.run(required.fetch_val("SELECT 1"))
    loop.run(required.close())
    my = url_for("mysql", None)
    plain = loop.run(Database.connect(my + "?ssl-mode=disabled"))
    cipher = loop.run(plain.fetch_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'"))
    assert cipher is None or cipher[1] in ("", b"")
    have_ssl = loop.run(plain.fetch_one("SHOW VARIABLES LIKE 'have_ssl'"))
    loop.run(plain.close())
    required = Database(DatabaseConfig(my + "?ssl-mode=required", connection_timeout_secs=3))
    if have_ssl is not None and have_ssl[1] in ("YES", b"YES"):
        cipher = loop.run(required.fetch_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'"))
        assert cipher[1] not in ("", b"")
    else:
        with pytest.raises(OperationalError):
            loop.run(required.fetch_val("SELECT 1"))
    loop.run(required.close())


def test_mariadb_columns_by_character_set_and_extended_type(db, loop):
    """MariaDB's JSON is LONGTEXT and its text with a ``_bin`` collation carries the BINARY flag:
    Cello reads the character set and MariaDB's extended type information (format ``json``,
    type ``uuid``) so they come back as PostgreSQL's would."""
    if db.backend != "mysql":
        pytest.skip("MySQL/MariaDB only")
    if "mariadb" not in str(loop.run(db.fetch_val("SELECT VERSION()"))).lower():
        pytest.skip("MariaDB's extended type information")
    loop.run(db.execute("DROP TABLE IF EXISTS dbq_my_kinds"))
    loop.run(
        db.execute(
            "CREATE TABLE dbq_my_kinds (j JSON, js JSON, vb VARCHAR(20) COLLATE utf8mb4_bin, "
            "tb TEXT COLLATE utf8mb4_bin, bin VARBINARY(20), blb BLOB, u UUID, c36 CHAR(36))"
        )
    )
    u = uuid.uuid4()
    loop.run(
        db.execute(
            "INSERT INTO dbq_my_kinds VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            {"k": [1, 2]},
            Json("scalar"),
            "bin-collated",
            "text-bin",
            b"\x00\x01",
            b'{"not": "json"}',
            u,
            str(u),
        )
    )
    r = loop.run(db.fetch_one("SELECT * FROM dbq_my_kinds"))
    assert r["j"] == {"k": [1, 2]}
    assert r["js"] == "scalar"  # a JSON string, decoded like PostgreSQL's
    assert r["vb"] == "bin-collated" and r["tb"] == "text-bin"
    assert r["bin"] == b"\x00\x01"
    assert r["blb"] == b'{"not": "json"}'  # a BLOB stays bytes, whatever it holds
    assert r["u"] == u and isinstance(r["u"], uuid.UUID)
    assert r["c36"] == str(u)  # a CHAR(36) is text
    # JSON functions are JSON too (as json_build_object is on PostgreSQL).
    f = loop.run(db.fetch_one("SELECT JSON_OBJECT('a', 1) AS o, JSON_EXTRACT(j, '$.k') AS e FROM dbq_my_kinds"))
    assert f["o"] == {"a": 1} and f["e"] == [1, 2]
    loop.run(db.execute("DROP TABLE dbq_my_kinds"))


def test_sqlite_declared_types_and_expressions(db, loop):
    """SQLite keeps a storage class per value; the column's declared type says the rest.
    An expression has no declared type: it comes back as stored."""
    if db.backend != "sqlite":
        pytest.skip("SQLite only")
    loop.run(db.execute("DROP TABLE IF EXISTS dbq_lite_kinds"))
    loop.run(
        db.execute(
            "CREATE TABLE dbq_lite_kinds (n NUMERIC, d DECIMAL(10,2), big DECIMAL, u UUID, ub UUID, j JSON, "
            "jb JSONB, t TEXT)"
        )
    )
    u = uuid.uuid4()
    loop.run(
        db.execute(
            "INSERT INTO dbq_lite_kinds VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            Decimal("7"),
            Decimal("1.10"),
            Decimal("123456789.125"),
            u,
            u.bytes,
            [1, "two"],
            {"x": None},
            '{"a": 1}',
        )
    )
    r = loop.run(db.fetch_one("SELECT * FROM dbq_lite_kinds"))
    assert r["n"] == Decimal("7") and isinstance(r["n"], Decimal)
    assert r["d"] == Decimal("1.1") and isinstance(r["d"], Decimal)
    assert r["big"] == Decimal("123456789.125")
    assert r["u"] == u and r["ub"] == u  # text or 16 bytes
    assert r["j"] == [1, "two"] and r["jb"] == {"x": None}
    assert r["t"] == '{"a": 1}'  # TEXT stays text
    # Expressions have no declared type: as stored.
    e = loop.run(db.fetch_one("SELECT json('{\"a\":1}') AS j, d + 0 AS n, upper(u) AS u FROM dbq_lite_kinds"))
    assert e["j"] == '{"a":1}' and e["n"] == 1.1 and e["u"] == str(u).upper()
    loop.run(db.execute("DROP TABLE dbq_lite_kinds"))


def test_pool_sizing_options_take_effect(loop):
    """``min_idle``, ``idle_timeout_secs`` and ``max_lifetime_secs`` of DatabaseConfig, on
    PostgreSQL: warm connections, idle ones closed, old ones replaced."""
    url = url_for("postgresql", None)

    async def until(what, check, timeout=8.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    async def go():
        warm = await Database.connect(DatabaseConfig(url, pool_size=3, min_idle=2))

        async def two_open():
            return warm.stats()["size"] >= 2

        await until("min_idle connections", two_open)
        await warm.close()

        idle = await Database.connect(DatabaseConfig(url, pool_size=3, min_idle=0, idle_timeout_secs=0.5))
        await asyncio.gather(*(idle.fetch_val("SELECT pg_sleep(0.3)") for _ in range(3)))
        assert idle.stats()["size"] == 3

        async def all_closed():
            return idle.stats()["size"] == 0

        await until("idle connections to close", all_closed)
        await idle.close()

        old = await Database.connect(DatabaseConfig(url, pool_size=1, max_lifetime_secs=1.0))
        first = await old.fetch_val("SELECT pg_backend_pid()")

        async def replaced():
            return await old.fetch_val("SELECT pg_backend_pid()") != first

        await until("a connection past max_lifetime to be replaced", replaced)
        await old.close()

    loop.run(go(), timeout=40)
