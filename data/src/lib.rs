//! `cello-data`: the data layer without Python — SQL pools and transactions on sqlx
//! (PostgreSQL, MySQL/MariaDB, SQLite) and Redis on the `redis` crate.
//!
//! A crate of its own so its logic (placeholders, type mapping, error classes) is tested
//! without libpython, and so the PyO3 crate only converts values. Every future here runs
//! on one process-wide tokio runtime ([`runtime`]): pools and their sockets belong to it,
//! whichever asyncio loop awaits them.

pub mod error;
pub mod placeholders;
pub mod redis;
pub mod sql;
pub mod value;

use std::sync::OnceLock;

pub use error::{Error, Kind, Result};
pub use value::{Rows, Value};

/// The data layer's runtime (two threads), started on first use — in the worker, after any
/// fork.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cello-data")
            .enable_all()
            .build()
            .expect("cannot start the data-layer runtime")
    })
}
