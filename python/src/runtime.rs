//! The Python endpoint and the thread that runs Python.
//!
//! Execution model (see ARCHITECTURE.md): tokio serves sockets on its own
//! thread(s) and never takes the GIL on the request path. A matched request
//! becomes a [`Job`] pushed onto the executor's bridge (`executor.rs`); the first
//! push after a drain writes one byte to a socketpair whose read end is registered
//! with the asyncio loop (`loop.add_reader`). The loop's thread then drains every
//! queued job in one GIL hold: sync handlers run inline, coroutines become asyncio
//! tasks, and responses travel back over oneshot channels. Under load one wake-up
//! serves a whole batch.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cello_config::ServerConfig;
use cello_server::endpoint::ResponseFuture;
use cello_server::problem::problem;
use cello_server::service::AccessRecord;
use cello_server::{
    App, AppState, Endpoint, Listener, RequestBody, ResponseBody, RoutedRequest, ServeOptions, Server, Target,
};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::sync::oneshot;

use crate::convert::{self, Reply};
use crate::errors::{config_err, server_err};
use crate::executor::{self, Bridge, Io, Work};
use crate::request::PyRequest;

/// Work for the Python thread.
pub enum Job {
    /// Run the handler of a matched request.
    Request(RoutedRequest, oneshot::Sender<Reply>, Arc<CancelSlot>),
    /// Nobody waits for this request any more (client gone, or handler timeout):
    /// cancel its task.
    Cancel(Arc<CancelSlot>),
    /// One access-log line.
    Access(AccessRecord),
    /// The server finished draining (with an error message if it failed).
    Stopped(Option<String>),
}

/// Links a request to the asyncio task running its handler, so it can be cancelled.
#[derive(Default)]
pub struct CancelSlot {
    task: Mutex<Option<Py<PyAny>>>,
}

impl CancelSlot {
    /// Remember the task (or executor future) that runs the handler.
    pub fn set(&self, task: Py<PyAny>) {
        *lock(&self.task) = Some(task);
    }
}

/// Queues a cancellation if the response future is dropped before it finished.
struct CancelOnDrop {
    slot: Option<Arc<CancelSlot>>,
    shared: Arc<Shared>,
}

impl CancelOnDrop {
    /// The request was answered: nothing to cancel.
    fn disarm(&mut self) {
        self.slot = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared.push(Job::Cancel(slot));
        }
    }
}

/// The queue between tokio and the Python thread.
pub type Shared = Bridge<Job>;

/// What converting results needs: shared by the runtime and its responders.
pub struct Ctx {
    /// `cello._runtime.Hooks`: spawn, pump, error, on_stopped, resolve.
    pub hooks: Py<PyAny>,
    /// `cello.Response`.
    pub response_type: Py<PyAny>,
    /// The asyncio loop of the Python thread.
    pub event_loop: Py<PyAny>,
    /// Config (trusted proxies, debug, limits).
    pub state: Arc<AppState>,
    /// The I/O runtime, once started.
    pub io: std::sync::OnceLock<tokio::runtime::Handle>,
    /// `types.CoroutineType`, for the eager-start fast path.
    pub coroutine_type: Py<PyAny>,
    /// `asyncio.Task`.
    pub task_type: Py<PyAny>,
    /// `{"loop": loop, "eager_start": True}` on Python 3.12+, else `None`.
    pub eager_kwargs: Option<Py<pyo3::types::PyDict>>,
    /// Counters for tests and metrics.
    pub stats: Stats,
}

/// Execution counters.
#[derive(Default)]
pub struct Stats {
    /// Coroutines that finished in their eager first step.
    pub eager: std::sync::atomic::AtomicU64,
    /// Handlers that needed an asyncio Task past their first step (or a loop round trip).
    pub tasks: std::sync::atomic::AtomicU64,
}

struct PyEndpoint {
    shared: Arc<Shared>,
    handler_timeout: Duration,
}

impl Endpoint for PyEndpoint {
    fn call(&self, req: RoutedRequest) -> ResponseFuture {
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(CancelSlot::default());
        self.shared.push_batched(Job::Request(req, tx, slot.clone()));
        let limit = self.handler_timeout;
        let mut guard = CancelOnDrop {
            slot: Some(slot),
            shared: self.shared.clone(),
        };
        Box::pin(async move {
            let reply = tokio::time::timeout(limit, rx).await;
            match reply {
                Ok(Ok(reply)) => {
                    guard.disarm();
                    reply.into_response().await
                }
                Ok(Err(_)) => {
                    guard.disarm();
                    problem(StatusCode::INTERNAL_SERVER_ERROR, "the handler produced no response")
                }
                // The guard cancels the handler's task when dropped here.
                Err(_) => problem(StatusCode::GATEWAY_TIMEOUT, "the handler did not finish in time"),
            }
        })
    }
}

/// Per-route execution state.
pub struct RouteExec {
    /// Run in the thread pool (declared `blocking=True`, or learned by `adaptive`).
    offload: AtomicBool,
    /// Calls observed slower than the threshold (adaptive mode).
    strikes: std::sync::atomic::AtomicU32,
}

/// Slow calls before an adaptive route moves to the pool: one slow call (a cold
/// cache, a GC pause) is not a pattern.
const ADAPTIVE_STRIKES: u32 = 3;

/// A compiled app: routes, handlers, config and (once started) the tokio runtime.
#[pyclass(frozen, module = "cello._cello")]
pub struct Runtime {
    shared: Arc<Shared>,
    endpoints: Vec<Py<PyAny>>,
    exec: Vec<RouteExec>,
    ctx: Arc<Ctx>,
    io: Io,
    listener: Mutex<Option<Listener>>,
    app: App,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Runtime {
    fn runtime(&self) -> PyResult<tokio::runtime::Handle> {
        let handle = self.io.handle(&self.shared)?;
        let _ = self.ctx.io.set(handle.clone());
        Ok(handle)
    }
}

#[pymethods]
impl Runtime {
    /// `routes[i] = (methods, path, blocking)` leads to `endpoints[i]`; `body_limits[i]`
    /// is that route's own `max_body_size` (`None`: `limits.maxBodySize`).
    #[new]
    #[pyo3(signature = (config_json, routes, endpoints, hooks, response_type, event_loop, body_limits=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        config_json: &str,
        routes: Vec<(Vec<String>, String, bool)>,
        endpoints: Vec<Py<PyAny>>,
        hooks: Py<PyAny>,
        response_type: Py<PyAny>,
        event_loop: Py<PyAny>,
        body_limits: Option<Vec<Option<u64>>>,
    ) -> PyResult<Self> {
        if routes.len() != endpoints.len() {
            return Err(PyValueError::new_err("routes and endpoints differ in length"));
        }
        let config = ServerConfig::from_json(config_json).map_err(config_err)?;
        let shared = Arc::new(Shared::new().map_err(|e| PyRuntimeError::new_err(e.to_string()))?);
        let endpoint: Arc<dyn Endpoint> = Arc::new(PyEndpoint {
            shared: shared.clone(),
            handler_timeout: Duration::from_secs_f64(config.timeouts.handler),
        });
        let mut builder = Server::builder(config);
        for (i, (methods, path, _)) in routes.iter().enumerate() {
            let methods = methods
                .iter()
                .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PyValueError::new_err(format!("bad method for {path}: {e}")))?;
            let options = cello_server::RouteOptions {
                max_body_size: body_limits.as_ref().and_then(|l| l.get(i).copied().flatten()),
                ..cello_server::RouteOptions::default()
            };
            // Route index `i` is the handler index `run_one` looks up.
            let index = builder
                .route_with(&methods, path, Target::Endpoint(endpoint.clone()), options)
                .map_err(server_err)?;
            debug_assert_eq!(index, i);
        }
        let access = shared.clone();
        let app = builder
            .access_log(Arc::new(move |rec| access.push(Job::Access(rec))))
            .build()
            .map_err(server_err)?;
        let state = app.state().clone();
        crate::observability::install(py, &state, &hooks, &event_loop);
        let coroutine_type = py.import("types")?.getattr("CoroutineType")?.unbind();
        let task_type = py.import("asyncio")?.getattr("Task")?.unbind();
        let eager_kwargs = if py.version_info() >= (3, 12) {
            let kw = pyo3::types::PyDict::new(py);
            kw.set_item("loop", event_loop.bind(py))?;
            kw.set_item("eager_start", true)?;
            Some(kw.unbind())
        } else {
            None
        };
        let ctx = Arc::new(Ctx {
            hooks,
            response_type,
            event_loop,
            state,
            io: std::sync::OnceLock::new(),
            coroutine_type,
            task_type,
            eager_kwargs,
            stats: Stats::default(),
        });
        let pool_all = ctx.state.config.threadpool.adaptive && ctx.state.config.threadpool.offload_threshold_ms == 0;
        let exec = routes
            .iter()
            .map(|(_, _, blocking)| RouteExec {
                offload: AtomicBool::new(*blocking || pool_all),
                strikes: std::sync::atomic::AtomicU32::new(0),
            })
            .collect();
        Ok(Self {
            shared,
            endpoints,
            exec,
            ctx,
            io: Io::default(),
            listener: Mutex::new(None),
            app,
        })
    }

    /// The file descriptor the event loop watches for work.
    fn wake_fd(&self) -> i32 {
        self.shared.fd()
    }

    /// Run every queued job. Called by the event loop when `wake_fd` is readable.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        let jobs = self.shared.take();
        let mut access = Vec::new();
        for work in jobs {
            let job = match work {
                Work::Call(call) => {
                    executor::run_call(py, call);
                    continue;
                }
                Work::Job(job) => job,
            };
            match job {
                Job::Request(req, tx, slot) => {
                    // A client that left while queued costs no handler call.
                    if !tx.is_closed() {
                        self.run_one(py, req, tx, slot);
                    }
                }
                Job::Cancel(slot) => {
                    if let Some(task) = lock(&slot.task).take() {
                        task.call_method0(py, "cancel")?;
                    }
                }
                Job::Access(rec) => access.push(access_tuple(&rec)),
                Job::Stopped(err) => {
                    self.ctx.hooks.call_method1(py, "on_stopped", (err,))?;
                }
            }
        }
        if !access.is_empty() {
            self.ctx.hooks.call_method1(py, "access", (access,))?;
        }
        Ok(())
    }

    /// Bind the listener now (so bind errors surface before hooks run); returns (host, port).
    fn bind(&self) -> PyResult<(String, u16)> {
        let listener = self.app.bind().map_err(server_err)?;
        let addr = listener.local_addr().map_err(server_err)?;
        *lock(&self.listener) = Some(listener);
        Ok((addr.ip().to_string(), addr.port()))
    }

    /// Serve on the bound listener in the background; `drain` is the shutdown timeout.
    /// With `handle_signals`, SIGTERM/SIGINT start the drain on the I/O thread at once
    /// (readiness flips even while a handler holds the Python thread); Python's own
    /// handlers, installed before, still run.
    #[pyo3(signature = (drain, handle_signals = false))]
    fn start(&self, drain: f64, handle_signals: bool) -> PyResult<()> {
        let listener = lock(&self.listener)
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("bind() must be called before start()"))?;
        let handle = self.runtime()?;
        let (app, shared) = (self.app.clone(), self.shared.clone());
        let opts = ServeOptions {
            drain_timeout: Duration::from_secs_f64(drain.max(0.0)),
            signals: handle_signals,
        };
        handle.spawn(async move {
            let res = app.serve(listener, opts).await;
            shared.push(Job::Stopped(res.err().map(|e| e.to_string())));
        });
        Ok(())
    }

    /// Stop accepting and drain; `on_stopped` is called on the loop when done.
    fn stop(&self) {
        // `/health/ready` answers 503 from now on; with a drain delay the listener stays
        // open that long so load balancers notice before connections are refused.
        self.app.drain();
    }

    /// Execution counters: `{"eager": n, "tasks": n}`.
    fn stats(&self) -> std::collections::HashMap<&'static str, u64> {
        let s = &self.ctx.stats;
        [
            ("eager", s.eager.load(Ordering::Relaxed)),
            ("tasks", s.tasks.load(Ordering::Relaxed)),
        ]
        .into_iter()
        .collect()
    }

    /// Whether the app runs in debug mode.
    #[getter]
    fn debug(&self) -> bool {
        self.ctx.state.config.debug
    }

    /// Registered routes as (methods, template), for `cello routes`.
    fn routes(&self) -> Vec<(Vec<String>, String)> {
        self.app
            .state()
            .router
            .routes()
            .into_iter()
            .map(|(m, t)| (m, t.to_string()))
            .collect()
    }

    /// Send one request through the real pipeline without a socket (TestClient).
    /// `future` (an asyncio future of the loop) gets `(status, headers, body)`.
    fn test_request(
        &self,
        future: Py<PyAny>,
        method: &str,
        target: &str,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        body: Vec<u8>,
    ) -> PyResult<()> {
        let mut builder = http::Request::builder().method(method.as_bytes()).uri(target);
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        let req = builder
            .body(RequestBody::full(body))
            .map_err(|e| PyValueError::new_err(format!("invalid test request: {e}")))?;
        let handle = self.runtime()?;
        let (app, shared) = (self.app.clone(), self.shared.clone());
        handle.spawn(async move {
            let peer = SocketAddr::from(([127, 0, 0, 1], 50000));
            let resp: Response<ResponseBody> = app.oneshot(req, Some(peer)).await;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map(http_body_util::Collected::to_bytes);
            // The result is built and set on the loop thread: no GIL on this one.
            shared.call(move |py| {
                let outcome = (|| -> PyResult<Py<PyAny>> {
                    let body = body.map_err(|e| PyRuntimeError::new_err(format!("response body failed: {e}")))?;
                    let headers = PyList::empty(py);
                    for (k, v) in &parts.headers {
                        headers.append((k.as_str(), PyBytes::new(py, v.as_bytes())))?;
                    }
                    let value = PyTuple::new(
                        py,
                        [
                            parts.status.as_u16().into_pyobject(py)?.into_any(),
                            headers.into_any(),
                            PyBytes::new(py, &body).into_any(),
                        ],
                    )?;
                    Ok(value.into_any().unbind())
                })();
                executor::settle(py, &future, outcome);
            });
        });
        Ok(())
    }
}

type AccessTuple = (
    String,
    String,
    String,
    u16,
    Option<u64>,
    f64,
    Option<String>,
    Option<(String, String)>,
    Option<String>,
);

fn access_tuple(rec: &AccessRecord) -> AccessTuple {
    (
        rec.method.to_string(),
        rec.target.clone(),
        format!("{:?}", rec.version),
        rec.status,
        rec.size,
        rec.duration.as_secs_f64() * 1000.0,
        rec.peer.map(|p| p.to_string()),
        rec.trace.clone(),
        rec.request_id.as_deref().map(str::to_owned),
    )
}

impl Runtime {
    fn run_one(&self, py: Python<'_>, req: RoutedRequest, tx: oneshot::Sender<Reply>, slot: Arc<CancelSlot>) {
        let index = req.route.target;
        if let Some(clock) = req.parts.extensions.get::<Arc<cello_server::metrics::QueueClock>>() {
            clock.dequeued();
        }
        let endpoint = self.endpoints[index].bind(py);
        let request = match Bound::new(py, PyRequest::from_routed(req, &self.ctx.state)) {
            Ok(r) => r,
            Err(e) => {
                convert::fail_plain(py, &e, tx);
                return;
            }
        };
        let exec = &self.exec[index];
        if exec.offload.load(Ordering::Relaxed) {
            let responder = Responder::new(self.ctx.clone(), tx, request.clone().unbind(), slot.clone());
            match self
                .ctx
                .hooks
                .call_method1(py, "offload", (endpoint, request, responder))
            {
                Ok(fut) => slot.set(fut),
                Err(e) => e.print(py),
            }
            return;
        }
        let pool = &self.ctx.state.config.threadpool;
        let started = pool.adaptive.then(std::time::Instant::now);
        let result = endpoint.call1((request.clone(),));
        if let Some(started) = started {
            let took = started.elapsed();
            if took.as_millis() > u128::from(pool.offload_threshold_ms)
                && exec.strikes.fetch_add(1, Ordering::Relaxed) + 1 >= ADAPTIVE_STRIKES
                && !exec.offload.swap(true, Ordering::Relaxed)
            {
                let name = endpoint
                    .getattr("__name__")
                    .map_or_else(|_| "?".to_owned(), |n| n.to_string());
                let msg = format!(
                    "handler {name} took {:.1} ms (threshold {} ms); running it in the thread pool from now on",
                    took.as_secs_f64() * 1000.0,
                    pool.offload_threshold_ms
                );
                let _ = self.ctx.hooks.call_method1(py, "log_info", (msg,));
            }
        }
        match result {
            Ok(result) => convert::respond(py, &self.ctx, result, request, tx, slot),
            Err(err) => convert::fail(py, &self.ctx, err, &request, tx),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // The I/O runtime (`self.io`) then shuts down without blocking.
        self.app.stop();
    }
}

/// Called from Python when a spawned handler task (or pool future) finishes.
#[pyclass(frozen, module = "cello._cello")]
pub struct Responder {
    ctx: Arc<Ctx>,
    tx: Mutex<Option<oneshot::Sender<Reply>>>,
    request: Py<PyRequest>,
    slot: Arc<CancelSlot>,
}

impl Responder {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        tx: oneshot::Sender<Reply>,
        request: Py<PyRequest>,
        slot: Arc<CancelSlot>,
    ) -> Self {
        Self {
            ctx,
            tx: Mutex::new(Some(tx)),
            request,
            slot,
        }
    }
}

#[pymethods]
impl Responder {
    /// `task.add_done_callback(responder)`.
    fn __call__(&self, py: Python<'_>, task: Bound<'_, PyAny>) -> PyResult<()> {
        let Some(tx) = lock(&self.tx).take() else { return Ok(()) };
        if task.call_method0("cancelled")?.is_truthy()? {
            return Ok(()); // client went away; nobody is waiting
        }
        lock(&self.slot.task).take();
        let request = self.request.bind(py).clone();
        match task.call_method0("result") {
            Ok(v) => convert::respond(py, &self.ctx, v, request, tx, self.slot.clone()),
            Err(e) => convert::fail(py, &self.ctx, e, &request, tx),
        }
        Ok(())
    }
}
