//! `SqlPool` and `SqlTx`: the pyclasses under `cello.database.Database` / `Transaction`.
//! Every method that talks to the server returns an asyncio future of the caller's
//! executor; the statement runs on the data runtime without the GIL.

use std::sync::Arc;

use cello_data::sql::{self, Database, Op, Output, Savepoint, Tx};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::convert::{to_py, to_values};
use super::record::rows_to_py;
use super::spawn;
use crate::executor::Executor;

/// `all` | `one` | `val` | `exec`.
#[derive(Clone, Copy)]
enum Want {
    All,
    One,
    Val,
    Exec,
}

fn want(op: &str) -> PyResult<Want> {
    Ok(match op {
        "all" => Want::All,
        "one" => Want::One,
        "val" => Want::Val,
        "exec" => Want::Exec,
        _ => return Err(PyValueError::new_err(format!("unknown op {op:?}"))),
    })
}

fn op_of(w: Want) -> Op {
    match w {
        Want::All => Op::All,
        Want::One | Want::Val => Op::One,
        Want::Exec => Op::Execute,
    }
}

fn output_to_py(py: Python<'_>, out: Output, w: Want, tuples: bool) -> PyResult<Py<PyAny>> {
    match (out, w) {
        (Output::Affected(n), _) => Ok(n.into_pyobject(py)?.into_any().unbind()),
        (Output::Rows(rows), Want::Val) => match rows.rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(v) => to_py(py, v),
            None => Ok(py.None()),
        },
        (Output::Rows(rows), Want::One) => {
            let list = rows_to_py(py, rows, tuples)?;
            let list = list.bind(py);
            if list.is_empty() {
                Ok(py.None())
            } else {
                Ok(list.get_item(0)?.unbind())
            }
        }
        (Output::Rows(rows), _) => Ok(rows_to_py(py, rows, tuples)?.into_any()),
    }
}

fn batches(py_batches: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<cello_data::Value>>> {
    let mut out = Vec::new();
    for b in py_batches.try_iter()? {
        out.push(to_values(&b?)?);
    }
    Ok(out)
}

/// A pool (`cello.database.Database` wraps one).
#[pyclass(frozen, module = "cello._cello")]
pub struct SqlPool {
    db: Arc<Database>,
}

#[pymethods]
impl SqlPool {
    /// Open a pool; awaitable, resolves to a `SqlPool`.
    #[staticmethod]
    #[pyo3(signature = (executor, url, pool_size, min_idle, max_lifetime_secs, connection_timeout_secs, idle_timeout_secs, application_name, lazy, name))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        url: String,
        pool_size: u32,
        min_idle: u32,
        max_lifetime_secs: f64,
        connection_timeout_secs: f64,
        idle_timeout_secs: f64,
        application_name: Option<String>,
        lazy: bool,
        name: String,
    ) -> PyResult<Py<PyAny>> {
        let opts = sql::Options {
            url,
            pool_size,
            min_idle,
            max_lifetime_secs,
            connection_timeout_secs,
            idle_timeout_secs,
            application_name,
            lazy,
        };
        spawn(
            py,
            executor,
            async move { Database::connect(opts, &name).await },
            |py, db| Ok(Py::new(py, SqlPool { db })?.into_any()),
        )
    }

    /// `postgresql`, `mysql` or `sqlite`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.db.backend().name()
    }

    /// Run a statement: `op` is `all`, `one`, `val` or `exec`.
    #[pyo3(signature = (executor, sql, params, op, tuples = false))]
    fn run(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        sql: String,
        params: &Bound<'_, PyAny>,
        op: &str,
        tuples: bool,
    ) -> PyResult<Py<PyAny>> {
        let w = want(op)?;
        let values = to_values(params)?;
        let db = self.db.clone();
        spawn(
            py,
            executor,
            async move { db.run(&sql, values, op_of(w)).await },
            move |py, out| output_to_py(py, out, w, tuples),
        )
    }

    fn run_many(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        sql: String,
        params: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let values = batches(params)?;
        let db = self.db.clone();
        spawn(py, executor, async move { db.run_many(&sql, values).await }, |py, n| {
            Ok(n.into_pyobject(py)?.into_any().unbind())
        })
    }

    /// Start a transaction on a connection of its own; awaitable, resolves to a `SqlTx`.
    fn begin(&self, py: Python<'_>, executor: &Bound<'_, Executor>) -> PyResult<Py<PyAny>> {
        let db = self.db.clone();
        spawn(py, executor, async move { db.begin().await }, |py, tx| {
            Ok(Py::new(py, SqlTx { tx: Arc::new(tx) })?.into_any())
        })
    }

    fn ping(&self, py: Python<'_>, executor: &Bound<'_, Executor>) -> PyResult<Py<PyAny>> {
        let db = self.db.clone();
        spawn(py, executor, async move { db.ping().await }, |py, ()| Ok(py.None()))
    }

    fn close(&self, py: Python<'_>, executor: &Bound<'_, Executor>) -> PyResult<Py<PyAny>> {
        let db = self.db.clone();
        spawn(
            py,
            executor,
            async move {
                db.close().await;
                Ok(())
            },
            |py, ()| Ok(py.None()),
        )
    }

    /// `{size, idle, in_use, max, acquired, wait_seconds, timeouts}`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.db.stats();
        let d = PyDict::new(py);
        d.set_item("backend", s.backend)?;
        d.set_item("max", s.max)?;
        d.set_item("size", s.size)?;
        d.set_item("idle", s.idle)?;
        d.set_item("in_use", s.size.saturating_sub(s.idle))?;
        d.set_item("acquired", s.acquired)?;
        d.set_item("wait_seconds", s.wait_seconds)?;
        d.set_item("timeouts", s.timeouts)?;
        Ok(d)
    }
}

/// An open transaction (`cello.database.Transaction` wraps one).
#[pyclass(frozen, module = "cello._cello")]
pub struct SqlTx {
    tx: Arc<Tx>,
}

#[pymethods]
impl SqlTx {
    #[pyo3(signature = (executor, sql, params, op, tuples = false))]
    fn run(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        sql: String,
        params: &Bound<'_, PyAny>,
        op: &str,
        tuples: bool,
    ) -> PyResult<Py<PyAny>> {
        let w = want(op)?;
        let values = to_values(params)?;
        let tx = self.tx.clone();
        spawn(
            py,
            executor,
            async move { tx.run(&sql, values, op_of(w)).await },
            move |py, out| output_to_py(py, out, w, tuples),
        )
    }

    fn run_many(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        sql: String,
        params: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let values = batches(params)?;
        let tx = self.tx.clone();
        spawn(py, executor, async move { tx.run_many(&sql, values).await }, |py, n| {
            Ok(n.into_pyobject(py)?.into_any().unbind())
        })
    }

    /// `verb`: `create`, `release` or `rollback_to`.
    fn savepoint(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        verb: &str,
        name: String,
    ) -> PyResult<Py<PyAny>> {
        let verb = match verb {
            "create" => Savepoint::Create,
            "release" => Savepoint::Release,
            "rollback_to" => Savepoint::RollbackTo,
            _ => return Err(PyValueError::new_err(format!("unknown savepoint verb {verb:?}"))),
        };
        let tx = self.tx.clone();
        spawn(
            py,
            executor,
            async move { tx.savepoint(verb, &name).await },
            |py, ()| Ok(py.None()),
        )
    }

    fn commit(&self, py: Python<'_>, executor: &Bound<'_, Executor>) -> PyResult<Py<PyAny>> {
        let tx = self.tx.clone();
        spawn(py, executor, async move { tx.commit().await }, |py, ()| Ok(py.None()))
    }

    fn rollback(&self, py: Python<'_>, executor: &Bound<'_, Executor>) -> PyResult<Py<PyAny>> {
        let tx = self.tx.clone();
        spawn(py, executor, async move { tx.rollback().await }, |py, ()| Ok(py.None()))
    }

    /// Roll back in the background (no awaiting possible any more).
    fn abandon(&self) {
        self.tx.abandon();
    }

    #[getter]
    fn is_open(&self) -> bool {
        self.tx.is_open()
    }
}

/// Every pool of this process (for `/metrics`).
pub fn all_stats() -> Vec<sql::PoolStats> {
    sql::pool_stats()
}
