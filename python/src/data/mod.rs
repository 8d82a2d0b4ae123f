//! The data layer's Python side: pyclasses over `cello-data` ([`sql`], [`redis`]), value
//! conversion ([`convert`]) and rows ([`record`]). Awaited through an [`Executor`] of the
//! caller's loop; the futures run on `cello_data::runtime()`.

pub mod convert;
pub mod record;
pub mod redis;
pub mod sql;

use std::future::Future;

use pyo3::prelude::*;

use crate::executor::Executor;

/// Run `fut` on the data runtime and hand its result to `executor`'s loop.
pub(crate) fn spawn<F, T, C>(py: Python<'_>, executor: &Bound<'_, Executor>, fut: F, convert: C) -> PyResult<Py<PyAny>>
where
    F: Future<Output = cello_data::Result<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let handle = cello_data::runtime().handle().clone();
    executor
        .get()
        .spawn_on(py, &handle, async move { Ok(fut.await) }, move |py, out| match out {
            Ok(v) => convert(py, v),
            Err(e) => Err(convert::to_pyerr(py, e)),
        })
}

/// Pool figures for `/metrics`: `cello_db_pool_*{pool, backend}`.
fn pool_metrics() -> Vec<cello_server::metrics::ExtraSample> {
    use cello_server::metrics::ExtraSample as S;
    let mut out = Vec::new();
    for p in sql::all_stats() {
        let labels = vec![
            ("pool".to_owned(), p.name.clone()),
            ("backend".to_owned(), p.backend.to_owned()),
        ];
        let mut push = |name: &'static str, help: &'static str, counter: bool, value: f64| {
            out.push(S {
                name,
                help,
                counter,
                labels: labels.clone(),
                value,
            });
        };
        push(
            "db_pool_max",
            "Connections a database pool may open.",
            false,
            p.max.into(),
        );
        push(
            "db_pool_size",
            "Connections a database pool holds open.",
            false,
            p.size.into(),
        );
        push(
            "db_pool_idle",
            "Idle connections of a database pool.",
            false,
            p.idle.into(),
        );
        push(
            "db_pool_in_use",
            "Connections of a database pool in use.",
            false,
            p.size.saturating_sub(p.idle).into(),
        );
        push(
            "db_pool_acquires_total",
            "Connections handed out by a database pool.",
            true,
            p.acquired as f64,
        );
        push(
            "db_pool_wait_seconds_total",
            "Seconds spent waiting for a database connection.",
            true,
            p.wait_seconds,
        );
        push(
            "db_pool_timeouts_total",
            "Waits for a database connection that ran out of connection_timeout_secs.",
            true,
            p.timeouts as f64,
        );
    }
    out
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<sql::SqlPool>()?;
    m.add_class::<sql::SqlTx>()?;
    m.add_class::<redis::RedisClient>()?;
    m.add_class::<redis::RedisSubscription>()?;
    m.add_class::<record::Record>()?;
    cello_server::metrics::register_source(pool_metrics);
    Ok(())
}
