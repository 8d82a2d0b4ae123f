//! Observability glue between the data plane and Python: readiness checks written in
//! Python, spans made with the Python `opentelemetry` SDK, the thread-pool gauge, and
//! Rust `tracing` events forwarded to Python's `logging` (one log setup per process).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use cello_server::health::{CheckResult, ChecksFuture, HealthChecker};
use cello_server::telemetry::bridge::{AttrValue, ForeignSpan};
use cello_server::AppState;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyList, PyString, PyTuple};
use tokio::sync::oneshot;

fn failed(name: &str, detail: String) -> Vec<CheckResult> {
    vec![CheckResult {
        name: name.into(),
        healthy: false,
        detail: Some(detail),
        duration_ms: 0.0,
    }]
}

/// Runs `hooks.health(timeout)` (a coroutine) on the app's event loop.
struct PyHealthChecker {
    hooks: Arc<Py<PyAny>>,
    event_loop: Arc<Py<PyAny>>,
}

type Reply = oneshot::Sender<Vec<CheckResult>>;

/// `concurrent.futures.Future.add_done_callback(reply)`: sends the results back.
#[pyclass(frozen, module = "cello._cello")]
pub struct HealthReply {
    tx: Mutex<Option<Reply>>,
}

#[pymethods]
impl HealthReply {
    fn __call__(&self, fut: Bound<'_, PyAny>) {
        let Some(tx) = self.tx.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return;
        };
        let results = match fut
            .call_method0("result")
            .and_then(|v| v.extract::<Vec<(String, bool, Option<String>, f64)>>())
        {
            Ok(list) => list
                .into_iter()
                .map(|(name, healthy, detail, duration_ms)| CheckResult {
                    name,
                    healthy,
                    detail,
                    duration_ms,
                })
                .collect(),
            Err(e) => failed("checks", format!("the health checks failed: {e}")),
        };
        let _ = tx.send(results);
    }
}

impl HealthChecker for PyHealthChecker {
    fn check(&self, timeout: Duration) -> ChecksFuture {
        let (hooks, event_loop) = (self.hooks.clone(), self.event_loop.clone());
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            // Scheduling needs the GIL for a moment: never on an I/O thread.
            let started = tokio::task::spawn_blocking(move || {
                Python::attach(|py| -> PyResult<()> {
                    let coro = hooks.call_method1(py, "health", (timeout.as_secs_f64(),))?;
                    let fut = py
                        .import("asyncio")?
                        .call_method1("run_coroutine_threadsafe", (coro, event_loop.bind(py)))?;
                    let reply = HealthReply {
                        tx: Mutex::new(Some(tx)),
                    };
                    fut.call_method1("add_done_callback", (reply,))?;
                    Ok(())
                })
            })
            .await;
            match started {
                Ok(Ok(())) => rx
                    .await
                    .unwrap_or_else(|_| failed("checks", "the event loop dropped the health checks".into())),
                Ok(Err(e)) => failed("checks", format!("cannot run the health checks: {e}")),
                Err(e) => failed("checks", format!("cannot run the health checks: {e}")),
            }
        })
    }
}

/// Wire the Python side into a freshly built server state.
pub fn install(py: Python<'_>, state: &AppState, hooks: &Py<PyAny>, event_loop: &Py<PyAny>) {
    if let Some(h) = &state.health {
        h.set_checker(Arc::new(PyHealthChecker {
            hooks: Arc::new(hooks.clone_ref(py)),
            event_loop: Arc::new(event_loop.clone_ref(py)),
        }));
    }
}

// ---- Python spans ----------------------------------------------------------------------------

fn attr_value(v: &Bound<'_, PyAny>) -> AttrValue {
    if v.is_instance_of::<PyBool>() {
        AttrValue::Bool(v.is_truthy().unwrap_or(false))
    } else if v.is_instance_of::<PyInt>() {
        v.extract::<i64>()
            .map_or_else(|_| AttrValue::Str(v.to_string()), AttrValue::Int)
    } else if v.is_instance_of::<PyFloat>() {
        AttrValue::Float(v.extract::<f64>().unwrap_or(f64::NAN))
    } else if v.is_instance_of::<PyString>() {
        AttrValue::Str(v.extract::<String>().unwrap_or_default())
    } else if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        AttrValue::List(
            v.try_iter()
                .map(|it| it.flatten().map(|x| attr_value(&x)).collect())
                .unwrap_or_default(),
        )
    } else {
        AttrValue::Str(v.to_string())
    }
}

fn attrs(list: Vec<(String, Bound<'_, PyAny>)>) -> Vec<(String, AttrValue)> {
    list.into_iter().map(|(k, v)| (k, attr_value(&v))).collect()
}

type PyEvent<'py> = (String, u64, Vec<(String, Bound<'py, PyAny>)>);

/// Queue a finished Python span for export with the server's spans. Returns False
/// when tracing is not enabled in this process.
#[pyfunction]
#[pyo3(signature = (name, trace_id, span_id, parent_span_id, parent_is_remote, trace_flags, trace_state, kind, start_ns, end_ns, attributes, events, status_code, status_description, scope_name, scope_version=None))]
#[allow(clippy::too_many_arguments)]
pub fn export_span(
    name: String,
    trace_id: u128,
    span_id: u64,
    parent_span_id: u64,
    parent_is_remote: bool,
    trace_flags: u8,
    trace_state: String,
    kind: u8,
    start_ns: u64,
    end_ns: u64,
    attributes: Vec<(String, Bound<'_, PyAny>)>,
    events: Vec<PyEvent<'_>>,
    status_code: u8,
    status_description: String,
    scope_name: String,
    scope_version: Option<String>,
) -> bool {
    let Some(t) = cello_server::telemetry::current() else {
        return false;
    };
    t.export_foreign(ForeignSpan {
        name,
        trace_id,
        span_id,
        parent_span_id,
        parent_is_remote,
        trace_flags,
        trace_state,
        kind,
        start_ns,
        end_ns,
        attributes: attrs(attributes),
        events: events.into_iter().map(|(n, t, a)| (n, t, attrs(a))).collect(),
        status_code,
        status_description,
        scope: (scope_name, scope_version),
    });
    true
}

/// A blocking handler entered the thread pool.
#[pyfunction]
pub fn pool_enter() {
    cello_server::metrics::THREADPOOL_BUSY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// A blocking handler left the thread pool.
#[pyfunction]
pub fn pool_exit() {
    cello_server::metrics::THREADPOOL_BUSY.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// A background task raised (counted in `{prefix}background_task_failures_total`).
#[pyfunction]
pub fn background_task_failed() {
    cello_server::metrics::BACKGROUND_TASK_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

// ---- Rust log events → Python logging --------------------------------------------------------

/// (level name, target, message, fields).
type LogRecord = (&'static str, String, String, Vec<(String, String)>);

const LOG_QUEUE_MAX: usize = 10_000;
static LOGS: Mutex<VecDeque<LogRecord>> = Mutex::new(VecDeque::new());
static BRIDGE: OnceLock<tracing::Level> = OnceLock::new();

struct Visitor {
    message: String,
    fields: Vec<(String, String)>,
}

impl tracing::field::Visit for Visitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.message);
        } else {
            self.fields.push((field.name().to_owned(), value.to_owned()));
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name().to_owned(), format!("{value:?}")));
        }
    }
}

/// Queues `tracing` events for Python (`take_logs`); drops them beyond 10,000.
struct PyLogLayer {
    max: tracing::Level,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PyLogLayer {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: tracing_subscriber::layer::Context<'_, S>) -> bool {
        *metadata.level() <= self.max
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > self.max {
            return;
        }
        let mut v = Visitor {
            message: String::new(),
            fields: Vec::new(),
        };
        event.record(&mut v);
        let mut q = LOGS.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() < LOG_QUEUE_MAX {
            q.push_back((meta.level().as_str(), meta.target().to_owned(), v.message, v.fields));
        }
    }
}

/// Send the data plane's `tracing` events at `level` (Python's numeric level) and above
/// to Python; collect them with `take_logs()`. Returns False if another subscriber was
/// installed first.
#[pyfunction]
pub fn install_log_bridge(level: u32) -> bool {
    use tracing_subscriber::layer::SubscriberExt;
    let max = match level {
        0..=10 => tracing::Level::DEBUG,
        11..=20 => tracing::Level::INFO,
        21..=30 => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    };
    if BRIDGE.get().is_some() {
        return true;
    }
    let subscriber = tracing_subscriber::registry().with(PyLogLayer { max });
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        return false;
    }
    let _ = BRIDGE.set(max);
    true
}

/// Queued `tracing` events: `[(level, target, message, [(field, value)])]`.
#[pyfunction]
pub fn take_logs() -> Vec<LogRecord> {
    LOGS.lock().unwrap_or_else(PoisonError::into_inner).drain(..).collect()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<HealthReply>()?;
    m.add_function(wrap_pyfunction!(export_span, m)?)?;
    m.add_function(wrap_pyfunction!(pool_enter, m)?)?;
    m.add_function(wrap_pyfunction!(pool_exit, m)?)?;
    m.add_function(wrap_pyfunction!(background_task_failed, m)?)?;
    m.add_function(wrap_pyfunction!(install_log_bridge, m)?)?;
    m.add_function(wrap_pyfunction!(take_logs, m)?)?;
    Ok(())
}
