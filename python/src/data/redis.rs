//! `RedisClient` and `RedisSubscription`: the pyclasses under `cello.database.Redis`.

use std::sync::Arc;

use cello_data::redis::{Message, Options, Redis, Subscription, Value};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::convert::to_pyerr;
use super::spawn;
use crate::executor::Executor;

/// A reply as Python: bulk strings are `str` (`decode`) or `bytes`.
fn reply(py: Python<'_>, v: Value, decode: bool) -> PyResult<Py<PyAny>> {
    let bytes = |b: Vec<u8>| -> PyResult<Py<PyAny>> {
        if decode {
            match String::from_utf8(b) {
                Ok(s) => Ok(PyString::new(py, &s).into_any().unbind()),
                Err(e) => Ok(PyBytes::new(py, e.as_bytes()).into_any().unbind()),
            }
        } else {
            Ok(PyBytes::new(py, &b).into_any().unbind())
        }
    };
    Ok(match v {
        Value::Nil => py.None(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::BulkString(b) => bytes(b)?,
        Value::SimpleString(s) => bytes(s.into_bytes())?,
        Value::Okay => true.into_pyobject(py)?.to_owned().into_any().unbind(),
        Value::Double(f) => f.into_pyobject(py)?.into_any().unbind(),
        Value::Boolean(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
        Value::VerbatimString { text, .. } => bytes(text.into_bytes())?,
        Value::BigNumber(n) => py.eval(&std::ffi::CString::new(n.to_string())?, None, None)?.unbind(),
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            let list = PyList::empty(py);
            for item in items {
                list.append(reply(py, item, decode)?)?;
            }
            list.into_any().unbind()
        }
        Value::Map(pairs) => {
            let d = PyDict::new(py);
            for (k, v) in pairs {
                d.set_item(reply(py, k, decode)?, reply(py, v, decode)?)?;
            }
            d.into_any().unbind()
        }
        Value::Attribute { data, .. } => reply(py, *data, decode)?,
        Value::ServerError(e) => {
            return Err(to_pyerr(
                py,
                cello_data::Error::Redis {
                    message: format!("{e:?}"),
                    unavailable: false,
                },
            ))
        }
    })
}

fn args_of(args: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for a in args.try_iter()? {
        out.push(a?.extract::<Vec<u8>>()?);
    }
    Ok(out)
}

/// A Redis client (connections opened on first use).
#[pyclass(frozen, module = "cello._cello")]
pub struct RedisClient {
    redis: Arc<Redis>,
}

#[pymethods]
impl RedisClient {
    #[new]
    #[pyo3(signature = (url, pool_size, connection_timeout_secs, cluster_mode, database, password, tls, min_idle = 1, idle_timeout_secs = 300.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: String,
        pool_size: u32,
        connection_timeout_secs: f64,
        cluster_mode: bool,
        database: u32,
        password: Option<String>,
        tls: bool,
        min_idle: u32,
        idle_timeout_secs: f64,
    ) -> PyResult<Self> {
        let opts = Options {
            url,
            pool_size,
            min_idle,
            idle_timeout_secs,
            connection_timeout_secs,
            cluster_mode,
            database,
            password,
            tls,
        };
        let redis = Redis::new(opts).map_err(|e| to_pyerr(py, e))?;
        Ok(Self { redis: Arc::new(redis) })
    }

    /// One command (each argument `bytes`); awaitable.
    #[pyo3(signature = (executor, args, decode = true))]
    fn cmd(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        args: &Bound<'_, PyAny>,
        decode: bool,
    ) -> PyResult<Py<PyAny>> {
        let args = args_of(args)?;
        let redis = self.redis.clone();
        spawn(py, executor, async move { redis.cmd(args).await }, move |py, v| {
            reply(py, v, decode)
        })
    }

    /// Several commands in one round trip; awaitable, resolves to the list of replies.
    #[pyo3(signature = (executor, cmds, atomic = false, decode = true))]
    fn pipeline(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        cmds: &Bound<'_, PyAny>,
        atomic: bool,
        decode: bool,
    ) -> PyResult<Py<PyAny>> {
        let mut all = Vec::new();
        for c in cmds.try_iter()? {
            all.push(args_of(&c?)?);
        }
        let redis = self.redis.clone();
        spawn(
            py,
            executor,
            async move { redis.pipeline(all, atomic).await },
            move |py, vs| {
                let list = PyList::empty(py);
                for v in vs {
                    // A failed command inside a pipeline is returned, not raised (as redis-py does).
                    match reply(py, v, decode) {
                        Ok(x) => list.append(x)?,
                        Err(e) => list.append(e.into_value(py))?,
                    }
                }
                Ok(list.into_any().unbind())
            },
        )
    }

    /// Connections open now.
    fn open_connections(&self) -> usize {
        self.redis.open_connections()
    }

    /// Subscribe on a connection of its own; awaitable, resolves to a `RedisSubscription`.
    fn subscribe(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        channels: Vec<String>,
        patterns: Vec<String>,
    ) -> PyResult<Py<PyAny>> {
        let redis = self.redis.clone();
        spawn(
            py,
            executor,
            async move { redis.subscribe(channels, patterns).await },
            |py, sub| Ok(Py::new(py, RedisSubscription { sub: Arc::new(sub) })?.into_any()),
        )
    }
}

/// Messages of a subscription.
#[pyclass(frozen, module = "cello._cello")]
pub struct RedisSubscription {
    sub: Arc<Subscription>,
}

fn message(py: Python<'_>, m: Message, decode: bool) -> PyResult<Py<PyAny>> {
    let payload = reply(py, Value::BulkString(m.payload), decode)?;
    Ok(PyTuple::new(
        py,
        [
            m.channel.into_pyobject(py)?.into_any().unbind(),
            m.pattern.into_pyobject(py)?.unbind(),
            payload,
        ],
    )?
    .into_any()
    .unbind())
}

#[pymethods]
impl RedisSubscription {
    /// Awaitable: `(channel, pattern, payload)` or None once closed.
    #[pyo3(signature = (executor, decode = true))]
    fn next(&self, py: Python<'_>, executor: &Bound<'_, Executor>, decode: bool) -> PyResult<Py<PyAny>> {
        let sub = self.sub.clone();
        spawn(
            py,
            executor,
            async move { Ok(sub.next().await) },
            move |py, m| match m {
                Some(m) => message(py, m, decode),
                None => Ok(py.None()),
            },
        )
    }

    fn close(&self) {
        self.sub.close();
    }
}
