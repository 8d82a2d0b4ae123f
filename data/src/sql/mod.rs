//! SQL pools (PostgreSQL, MySQL/MariaDB, SQLite) and transactions on sqlx.
//!
//! One [`Database`] per pool; the backend is picked from the URL. Statements arrive with
//! `$n` or `?` placeholders and are rewritten for the backend ([`crate::placeholders`]);
//! the parameter count is checked before anything is sent.

mod mysql;
mod pg;
mod sqlite;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{Connection, MySql, Postgres, Sqlite};

use crate::error::{Error, Kind, Result};
use crate::placeholders::{translate, Style};
use crate::value::{Rows, Value};

/// Pool settings (the fields of `DatabaseConfig`).
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub pool_size: u32,
    pub min_idle: u32,
    pub max_lifetime_secs: f64,
    pub connection_timeout_secs: f64,
    pub idle_timeout_secs: f64,
    pub application_name: Option<String>,
    /// Open connections on first use instead of now (an app starts while its database is down).
    pub lazy: bool,
}

/// Which server a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MySql,
    Sqlite,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgresql",
            Backend::MySql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }

    fn style(self) -> Style {
        match self {
            Backend::Postgres => Style::Dollar,
            Backend::MySql => Style::Question,
            Backend::Sqlite => Style::QuestionNumbered,
        }
    }

    /// From a URL's scheme.
    pub fn of_url(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            "sqlite" => Ok(Backend::Sqlite),
            _ => Err(Error::Config(format!(
                "unsupported database URL scheme {scheme:?}: use postgresql://, mysql:// or sqlite://"
            ))),
        }
    }
}

/// What a statement returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Every row.
    All,
    /// The first row, if any.
    One,
    /// Rows affected.
    Execute,
}

/// The result of [`Op`].
#[derive(Debug)]
pub enum Output {
    Rows(Rows),
    Affected(u64),
}

#[derive(Clone)]
enum Pool {
    Pg(sqlx::PgPool),
    My(sqlx::MySqlPool),
    Lite(sqlx::SqlitePool),
}

enum Conn {
    Pg(PoolConnection<Postgres>),
    My(PoolConnection<MySql>),
    Lite(PoolConnection<Sqlite>),
}

/// Counters of one pool, read by `/metrics`.
#[derive(Debug, Default)]
pub struct Waits {
    /// Connections handed out.
    pub acquired: AtomicU64,
    /// Nanoseconds spent waiting for them.
    pub wait_nanos: AtomicU64,
    /// Waits that ended in `PoolTimeout`.
    pub timeouts: AtomicU64,
}

/// One pool's figures.
#[derive(Debug, Clone)]
pub struct PoolStats {
    pub name: String,
    pub backend: &'static str,
    pub max: u32,
    pub size: u32,
    pub idle: u32,
    pub acquired: u64,
    pub wait_seconds: f64,
    pub timeouts: u64,
}

/// A connection pool.
pub struct Database {
    pool: Pool,
    backend: Backend,
    max: u32,
    waits: Waits,
    name: String,
}

type Registry = Mutex<Vec<std::sync::Weak<Database>>>;
static POOLS: Registry = Mutex::new(Vec::new());

/// Figures of every open pool of this process.
pub fn pool_stats() -> Vec<PoolStats> {
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    pools.retain(|w| w.strong_count() > 0);
    pools
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .map(|db| db.stats())
        .collect()
}

fn secs(v: f64) -> Option<Duration> {
    (v > 0.0).then(|| Duration::try_from_secs_f64(v).ok()).flatten()
}

fn pool_options<DB: sqlx::Database>(o: &Options, memory: bool) -> PoolOptions<DB> {
    let opts = PoolOptions::<DB>::new()
        .max_connections(o.pool_size.max(1))
        .acquire_timeout(secs(o.connection_timeout_secs).unwrap_or(Duration::from_secs(5)))
        // A connection the server dropped (restart, pg_terminate_backend) fails this ping and
        // is replaced, so the next request succeeds.
        .test_before_acquire(true);
    if memory {
        // An in-memory SQLite database lives as long as one of its connections does.
        opts.min_connections(1).idle_timeout(None).max_lifetime(None)
    } else {
        opts.min_connections(o.min_idle.min(o.pool_size.max(1)))
            .idle_timeout(secs(o.idle_timeout_secs))
            .max_lifetime(secs(o.max_lifetime_secs))
    }
}

impl Database {
    /// Open a pool (`lazy`: connections are made on first use).
    pub async fn connect(o: Options, name: &str) -> Result<Arc<Self>> {
        let backend = Backend::of_url(&o.url)?;
        if o.application_name.is_some() && backend != Backend::Postgres {
            return Err(Error::Config(
                "application_name is a PostgreSQL setting; remove it for MySQL and SQLite".into(),
            ));
        }
        let cfg = |e: sqlx::Error| Error::Config(format!("bad database URL: {e}"));
        let pool = match backend {
            Backend::Postgres => {
                let mut c = sqlx::postgres::PgConnectOptions::from_str(&o.url).map_err(cfg)?;
                if let Some(name) = &o.application_name {
                    c = c.application_name(name);
                }
                let p = pool_options::<Postgres>(&o, false);
                Pool::Pg(if o.lazy {
                    p.connect_lazy_with(c)
                } else {
                    p.connect_with(c).await?
                })
            }
            Backend::MySql => {
                let url = o.url.replacen("mariadb://", "mysql://", 1);
                let c = sqlx::mysql::MySqlConnectOptions::from_str(&url).map_err(cfg)?;
                let p = pool_options::<MySql>(&o, false);
                Pool::My(if o.lazy {
                    p.connect_lazy_with(c)
                } else {
                    p.connect_with(c).await?
                })
            }
            Backend::Sqlite => {
                let memory = o.url.contains(":memory:") || o.url.contains("mode=memory");
                let c = sqlx::sqlite::SqliteConnectOptions::from_str(&o.url)
                    .map_err(cfg)?
                    .create_if_missing(true)
                    .foreign_keys(true)
                    .busy_timeout(secs(o.connection_timeout_secs).unwrap_or(Duration::from_secs(5)));
                let c = if memory {
                    c
                } else {
                    c.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                };
                let p = pool_options::<Sqlite>(&o, memory);
                let p = if memory {
                    p.max_connections(o.pool_size.max(1))
                } else {
                    p
                };
                Pool::Lite(if o.lazy {
                    p.connect_lazy_with(c)
                } else {
                    p.connect_with(c).await?
                })
            }
        };
        let db = Arc::new(Self {
            pool,
            backend,
            max: o.pool_size.max(1),
            waits: Waits::default(),
            name: name.to_owned(),
        });
        POOLS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&db));
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn stats(&self) -> PoolStats {
        let (size, idle) = match &self.pool {
            Pool::Pg(p) => (p.size(), p.num_idle()),
            Pool::My(p) => (p.size(), p.num_idle()),
            Pool::Lite(p) => (p.size(), p.num_idle()),
        };
        PoolStats {
            name: self.name.clone(),
            backend: self.backend.name(),
            max: self.max,
            size,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            acquired: self.waits.acquired.load(Ordering::Relaxed),
            wait_seconds: self.waits.wait_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            timeouts: self.waits.timeouts.load(Ordering::Relaxed),
        }
    }

    async fn acquire(&self) -> Result<Conn> {
        let started = Instant::now();
        let got = match &self.pool {
            Pool::Pg(p) => p.acquire().await.map(Conn::Pg),
            Pool::My(p) => p.acquire().await.map(Conn::My),
            Pool::Lite(p) => p.acquire().await.map(Conn::Lite),
        };
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.waits.wait_nanos.fetch_add(waited, Ordering::Relaxed);
        match got {
            Ok(c) => {
                self.waits.acquired.fetch_add(1, Ordering::Relaxed);
                Ok(c)
            }
            Err(e) => {
                let e = Error::from(e);
                if matches!(
                    e,
                    Error::Db {
                        kind: Kind::PoolTimeout,
                        ..
                    }
                ) {
                    self.waits.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    /// Run one statement on a pooled connection.
    pub async fn run(&self, sql: &str, params: Vec<Value>, op: Op) -> Result<Output> {
        let (sql, params) = self.prepare(sql, params)?;
        let mut conn = self.acquire().await?;
        conn.run(&sql, params, op).await
    }

    /// Run one statement per parameter list, all in one transaction; rows affected in total.
    pub async fn run_many(self: &Arc<Self>, sql: &str, batches: Vec<Vec<Value>>) -> Result<u64> {
        let tx = self.begin().await?;
        let total = tx.run_many(sql, batches).await;
        match total {
            Ok(n) => {
                tx.commit().await?;
                Ok(n)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Rewrite the placeholders and check the parameter count (before anything is sent).
    fn prepare(&self, sql: &str, params: Vec<Value>) -> Result<(String, Vec<Value>)> {
        let t = translate(sql, self.backend.style())?;
        if t.params != params.len() {
            return Err(Error::Param(format!(
                "the statement takes {} parameter{}, {} given",
                t.params,
                if t.params == 1 { "" } else { "s" },
                params.len()
            )));
        }
        let params = if t.order.is_empty() {
            params
        } else {
            t.order.iter().map(|&i| params[i].clone()).collect()
        };
        Ok((t.sql, params))
    }

    /// A transaction on a connection of its own.
    pub async fn begin(self: &Arc<Self>) -> Result<Tx> {
        let mut conn = self.acquire().await?;
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            _ => "BEGIN",
        };
        conn.raw(begin).await?;
        Ok(Tx {
            db: self.clone(),
            conn: tokio::sync::Mutex::new(Some(conn)),
        })
    }

    /// Is the server reachable? (one round trip on a pooled connection)
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.acquire().await?;
        match &mut conn {
            Conn::Pg(c) => c.ping().await?,
            Conn::My(c) => c.ping().await?,
            Conn::Lite(c) => c.ping().await?,
        }
        Ok(())
    }

    /// Close every connection (waits for those in use to come back).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Pg(p) => p.close().await,
            Pool::My(p) => p.close().await,
            Pool::Lite(p) => p.close().await,
        }
    }
}

impl Conn {
    async fn run(&mut self, sql: &str, params: Vec<Value>, op: Op) -> Result<Output> {
        match self {
            Conn::Pg(c) => pg::run(c, sql, params, op).await,
            Conn::My(c) => mysql::run(c, sql, params, op).await,
            Conn::Lite(c) => sqlite::run(c, sql, params, op).await,
        }
    }

    async fn raw(&mut self, sql: &str) -> Result<()> {
        use sqlx::Executor as _;
        match self {
            Conn::Pg(c) => c.execute(sql).await.map(drop)?,
            Conn::My(c) => c.execute(sql).await.map(drop)?,
            Conn::Lite(c) => c.execute(sql).await.map(drop)?,
        }
        Ok(())
    }
}

/// A transaction: one connection, held until `commit`/`rollback`. Dropped while open (its
/// handler timed out, the client went away, the Python object was collected) it is rolled
/// back on the data runtime and the connection goes back to the pool.
pub struct Tx {
    db: Arc<Database>,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl Tx {
    /// Run one statement inside the transaction.
    pub async fn run(&self, sql: &str, params: Vec<Value>, op: Op) -> Result<Output> {
        let (sql, params) = self.db.prepare(sql, params)?;
        let mut guard = self.conn.lock().await;
        let conn = guard.as_mut().ok_or_else(ended)?;
        conn.run(&sql, params, op).await
    }

    pub async fn run_many(&self, sql: &str, batches: Vec<Vec<Value>>) -> Result<u64> {
        let mut total = 0;
        for params in batches {
            if let Output::Affected(n) = self.run(sql, params, Op::Execute).await? {
                total += n;
            }
        }
        Ok(total)
    }

    /// `SAVEPOINT name` / `RELEASE SAVEPOINT name` / `ROLLBACK TO SAVEPOINT name`.
    pub async fn savepoint(&self, verb: Savepoint, name: &str) -> Result<()> {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Error::Param(format!("bad savepoint name {name:?}")));
        }
        let sql = match verb {
            Savepoint::Create => format!("SAVEPOINT {name}"),
            Savepoint::Release => format!("RELEASE SAVEPOINT {name}"),
            Savepoint::RollbackTo => format!("ROLLBACK TO SAVEPOINT {name}"),
        };
        let mut guard = self.conn.lock().await;
        guard.as_mut().ok_or_else(ended)?.raw(&sql).await
    }

    pub async fn commit(&self) -> Result<()> {
        self.finish("COMMIT").await
    }

    pub async fn rollback(&self) -> Result<()> {
        self.finish("ROLLBACK").await
    }

    async fn finish(&self, sql: &str) -> Result<()> {
        let mut guard = self.conn.lock().await;
        let mut conn = guard.take().ok_or_else(ended)?;
        let out = conn.raw(sql).await;
        if out.is_err() && sql == "COMMIT" {
            // A failed COMMIT leaves the connection mid-transaction: roll it back first.
            let _ = conn.raw("ROLLBACK").await;
        }
        out
    }

    /// Roll back in the background (the Python side can no longer await: cancelled twice).
    pub fn abandon(self: &Arc<Self>) {
        let tx = self.clone();
        crate::runtime().spawn(async move {
            let _ = tx.rollback().await;
        });
    }

    /// Still open (neither committed nor rolled back)?
    pub fn is_open(&self) -> bool {
        self.conn.try_lock().map(|g| g.is_some()).unwrap_or(true)
    }
}

/// A savepoint statement.
#[derive(Debug, Clone, Copy)]
pub enum Savepoint {
    Create,
    Release,
    RollbackTo,
}

fn ended() -> Error {
    Error::State("the transaction has already been committed or rolled back".into())
}

impl Drop for Tx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.get_mut().take() else {
            return;
        };
        let rollback = async move {
            if conn.raw("ROLLBACK").await.is_err() {
                // Unknown state: close it rather than hand it to the next request.
                match conn {
                    Conn::Pg(c) => drop(c.detach()),
                    Conn::My(c) => drop(c.detach()),
                    Conn::Lite(c) => drop(c.detach()),
                }
            }
        };
        crate::runtime().spawn(rollback);
    }
}
