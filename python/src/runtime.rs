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

use crate::access::AccessBuffer;
use crate::convert::{self, Reply};
use crate::errors::{config_err, server_err};
use crate::executor::{self, Bridge, Io, Work};
use crate::request::PyRequest;

/// Work for the Python thread.
pub enum Job {
    /// Run the handler of a matched request (the request itself waits in the slot).
    Request(oneshot::Sender<Reply>, Arc<CancelSlot>),
    /// Nobody waits for this request any more (client gone, or handler timeout):
    /// cancel its task.
    Cancel(Arc<CancelSlot>),
    /// Access records are waiting (see `access.rs`): take them.
    FlushAccess,
    /// The server finished draining (with an error message if it failed).
    Stopped(Option<String>),
}

/// Links a request to the asyncio task running its handler, so it can be cancelled.
#[derive(Default)]
pub struct CancelSlot {
    task: Mutex<Option<Py<PyAny>>>,
    /// The queued request, until the Python thread takes it. Whoever gives up on it
    /// (a 504, a client gone) takes it out, so its body is freed at once even when the
    /// Python thread is stuck and the job stays queued.
    pub(crate) request: Mutex<Option<RoutedRequest>>,
}

impl CancelSlot {
    /// Remember the task (or executor future) that runs the handler.
    pub fn set(&self, task: Py<PyAny>) {
        *lock(&self.task) = Some(task);
    }
}

/// Queues a cancellation if the response future is dropped before it finished.
pub(crate) struct CancelOnDrop {
    slot: Option<Arc<CancelSlot>>,
    shared: Arc<Shared>,
}

impl CancelOnDrop {
    pub(crate) fn new(slot: Arc<CancelSlot>, shared: Arc<Shared>) -> Self {
        Self {
            slot: Some(slot),
            shared,
        }
    }

    /// The request was answered: nothing to cancel.
    pub(crate) fn disarm(&mut self) {
        self.slot = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            drop(lock(&slot.request).take());
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
    /// Where a `Response` keeps its state (`None`: read through attributes).
    pub layout: Option<crate::convert::ResponseLayout>,
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
    queue: Arc<QueueBound>,
    handlers: Arc<Handlers>,
}

/// The Python endpoints and their execution state, shared by the loop thread (`drain`) and
/// the I/O threads (inline calls).
pub(crate) struct Handlers {
    endpoints: Vec<Py<PyAny>>,
    exec: Vec<RouteExec>,
    /// Set once the runtime is built: an inline call converts its result with it. Weak: the
    /// context holds the app state, whose router holds this (a strong cycle would keep a
    /// stopped app, its handlers and its telemetry alive).
    ctx: std::sync::OnceLock<std::sync::Weak<Ctx>>,
    /// Sync handlers may run on the I/O thread (`CELLO_INLINE`, decided in Python).
    inline: bool,
    /// The loop thread is inside `drain()` and holds the GIL: a request then joins its batch
    /// rather than wait for the GIL on the I/O thread.
    draining: AtomicBool,
    /// The server is stopping: nothing new runs on I/O threads (the interpreter may be
    /// finalizing soon).
    stopping: AtomicBool,
}

impl Handlers {
    /// The route runs inline now (on the calling I/O thread).
    fn inline_now(&self, index: usize) -> bool {
        self.inline
            && self.exec.get(index).is_some_and(|e| e.inline.load(Ordering::Relaxed))
            && !self.draining.load(Ordering::Acquire)
            && !self.stopping.load(Ordering::Acquire)
    }
}

thread_local! {
    static KEPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Give this I/O thread a Python thread state that it keeps. Without one, every `attach`
/// would create and destroy a thread state (`PyGILState_Release` deletes the state whose
/// count drops to zero).
#[allow(unsafe_code)]
fn keep_thread_state() {
    KEPT.with(|kept| {
        if !kept.get() {
            kept.set(true);
            // SAFETY: the interpreter is initialized (this runs in its extension, serving, and
            // not while stopping); the GIL taken here is released at once, leaving the thread
            // state's count at one, so later `attach`es on this thread reuse it.
            unsafe {
                pyo3::ffi::PyGILState_Ensure();
                pyo3::ffi::PyEval_SaveThread();
            }
        }
    });
}

/// Bounds the requests waiting for the Python thread (`limits.maxQueuedRequests`).
pub struct QueueBound {
    queued: std::sync::atomic::AtomicU64,
    max: u64,
}

impl QueueBound {
    /// Count one more queued request; `false` when the queue is full. Every
    /// `Job::Request` pushed must have entered: the Python thread leaves for each.
    pub(crate) fn enter(&self) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.leave();
            return false;
        }
        true
    }

    /// The Python thread took a queued request off.
    fn leave(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// The 503 for a request refused because the queue is full (counted in metrics).
    pub(crate) fn busy(&self) -> Response<ResponseBody> {
        cello_server::metrics::QUEUE_REJECTED.fetch_add(1, Ordering::Relaxed);
        let mut resp = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the worker is busy: {} requests are already waiting for it", self.max),
        );
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        resp
    }
}

impl Endpoint for PyEndpoint {
    fn call(&self, req: RoutedRequest) -> ResponseFuture {
        if self.handlers.inline_now(req.route.target) {
            if let Some(ctx) = self.handlers.ctx.get().and_then(std::sync::Weak::upgrade) {
                return self.call_inline(&ctx, req);
            }
        }
        if !self.queue.enter() {
            return Box::pin(std::future::ready(self.queue.busy()));
        }
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(CancelSlot::default());
        *lock(&slot.request) = Some(req);
        self.shared.push_batched(Job::Request(tx, slot.clone()));
        self.wait(rx, slot)
    }
}

impl PyEndpoint {
    /// Run a sync handler that proved fast right here on the I/O thread: no hand-off, no
    /// wake-up of the loop thread, no context switch. A call that turns out slow sends the
    /// route back to the loop thread; a result that needs the loop (an awaitable, an iterator
    /// to pump) is finished there, and the route never runs inline again.
    fn call_inline(&self, ctx: &Arc<Ctx>, req: RoutedRequest) -> ResponseFuture {
        let index = req.route.target;
        if let Some(clock) = req.parts.extensions.get::<Arc<cello_server::metrics::QueueClock>>() {
            clock.dequeued();
        }
        keep_thread_state();
        let handled = Python::try_attach(|py| {
            let (Some(endpoint), Some(exec)) = (self.handlers.endpoints.get(index), self.handlers.exec.get(index))
            else {
                return ready_response(problem(StatusCode::INTERNAL_SERVER_ERROR, "no handler for this route"));
            };
            let endpoint = endpoint.bind(py);
            let request = match Bound::new(py, PyRequest::from_routed(req, &ctx.state)) {
                Ok(r) => r,
                Err(e) => {
                    e.print(py);
                    return ready_response(problem(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"));
                }
            };
            let started = std::time::Instant::now();
            let result = endpoint.call1((request.clone(),));
            let took = started.elapsed();
            if took > INLINE_FAST {
                exec.demote(py, ctx, endpoint, took);
            }
            let reply = match result {
                Ok(result) => match convert::respond_inline(py, ctx, result, &request) {
                    Ok(reply) => reply,
                    Err(result) => {
                        exec.off_loop.store(false, Ordering::Relaxed);
                        exec.inline.store(false, Ordering::Relaxed);
                        return self.finish_on_loop(ctx, result.unbind(), request.unbind());
                    }
                },
                Err(err) => convert::fail_inline(py, ctx, err, &request),
            };
            match reply {
                Reply::Ready(resp) => ready_response(resp),
                file => Box::pin(file.into_response()),
            }
        });
        handled.unwrap_or_else(|| ready_response(problem(StatusCode::SERVICE_UNAVAILABLE, "the worker is stopping")))
    }

    /// A result of an inline call that needs the loop thread: respond there.
    fn finish_on_loop(&self, ctx: &Arc<Ctx>, result: Py<PyAny>, request: Py<PyRequest>) -> ResponseFuture {
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(CancelSlot::default());
        let (ctx, job_slot) = (ctx.clone(), slot.clone());
        self.shared.call(move |py| {
            convert::respond(py, &ctx, result.into_bound(py), request.into_bound(py), tx, job_slot);
        });
        self.wait(rx, slot)
    }

    /// The response of a request handed to the loop thread, within the handler timeout.
    fn wait(&self, rx: oneshot::Receiver<Reply>, slot: Arc<CancelSlot>) -> ResponseFuture {
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

fn ready_response(resp: Response<ResponseBody>) -> ResponseFuture {
    Box::pin(std::future::ready(resp))
}

/// Per-route execution state.
pub struct RouteExec {
    /// Run in the thread pool (declared `blocking=True`, or learned by `adaptive`).
    offload: AtomicBool,
    /// The pool decision may be revised (learned by `adaptive`, not declared).
    learned: bool,
    /// Slow calls in a row (adaptive mode).
    strikes: std::sync::atomic::AtomicU32,
    /// Pooled calls since the last inline trial.
    since_trial: std::sync::atomic::AtomicU32,
    /// Pooled calls between inline trials (doubles after each slow trial).
    trial_every: std::sync::atomic::AtomicU32,
    /// May run on an I/O thread (a sync endpoint, per Python); cleared for good when it
    /// returns something that needs the loop.
    off_loop: AtomicBool,
    /// Runs on the I/O thread now.
    inline: AtomicBool,
    /// Fast calls in a row on the loop thread, towards `inline`.
    fast_calls: std::sync::atomic::AtomicU32,
    /// Times it was sent back from the I/O thread: each doubles the fast calls it needs.
    demoted: std::sync::atomic::AtomicU32,
}

impl RouteExec {
    fn new(declared: bool, pool_all: bool, off_loop: bool) -> Self {
        Self {
            offload: AtomicBool::new(declared || pool_all),
            learned: !declared && !pool_all,
            strikes: std::sync::atomic::AtomicU32::new(0),
            since_trial: std::sync::atomic::AtomicU32::new(0),
            trial_every: std::sync::atomic::AtomicU32::new(TRIAL_FIRST),
            off_loop: AtomicBool::new(off_loop && !declared && !pool_all),
            inline: AtomicBool::new(false),
            fast_calls: std::sync::atomic::AtomicU32::new(0),
            demoted: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Still learning whether to run inline (on the loop thread).
    fn learning(&self) -> bool {
        self.off_loop.load(Ordering::Relaxed) && !self.inline.load(Ordering::Relaxed)
    }

    /// A call on the loop thread finished: `fast` when it took under [`INLINE_FAST`] and
    /// returned a plain value. Enough of them in a row move the route to the I/O thread.
    fn learn(&self, fast: bool) {
        if !fast {
            self.fast_calls.store(0, Ordering::Relaxed);
            return;
        }
        let demoted = self.demoted.load(Ordering::Relaxed);
        if demoted > INLINE_MAX_DEMOTIONS {
            return;
        }
        let needed = INLINE_AFTER << demoted;
        if self.fast_calls.fetch_add(1, Ordering::Relaxed) + 1 >= needed {
            self.fast_calls.store(0, Ordering::Relaxed);
            self.inline.store(true, Ordering::Relaxed);
        }
    }

    /// An inline call was slow: back to the loop thread (logged once per move).
    fn demote(&self, py: Python<'_>, ctx: &Ctx, endpoint: &Bound<'_, PyAny>, took: Duration) {
        if !self.inline.swap(false, Ordering::Relaxed) {
            return;
        }
        let times = self.demoted.fetch_add(1, Ordering::Relaxed) + 1;
        let name = endpoint
            .getattr("__name__")
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        let msg = format!(
            "handler {name} took {:.1} ms on the I/O thread; it runs on the loop thread again{}",
            took.as_secs_f64() * 1000.0,
            if times > INLINE_MAX_DEMOTIONS { " for good" } else { "" }
        );
        let _ = ctx.hooks.call_method1(py, "log_info", (msg,));
    }

    /// A route adaptive offload moved to the pool runs one call in `trial_every`
    /// inline, timed: when it is fast again it returns inline for good.
    fn trial_due(&self) -> bool {
        if !self.learned {
            return false;
        }
        let n = self.since_trial.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.trial_every.load(Ordering::Relaxed) {
            return false;
        }
        self.since_trial.store(0, Ordering::Relaxed);
        true
    }
}

/// Slow calls in a row before an adaptive route moves to the pool: one slow call (a
/// cold cache, a GC pause) is not a pattern.
const ADAPTIVE_STRIKES: u32 = 3;
/// Pooled calls before the first inline trial of an offloaded route; each slow trial
/// doubles the interval up to [`TRIAL_MAX`], so a really slow route blocks the loop
/// once in a thousand calls at most.
const TRIAL_FIRST: u32 = 16;
const TRIAL_MAX: u32 = 1024;

/// A sync handler runs on the I/O thread once this many calls in a row took under
/// [`INLINE_FAST`] on the loop thread: a handler that blocks (a slow first call, `time.sleep`)
/// never holds up the sockets, `/health/*` and the stop signal's readiness flip.
const INLINE_AFTER: u32 = 16;
/// Longer than this on the I/O thread sends a route back to the loop thread.
const INLINE_FAST: Duration = Duration::from_millis(1);
/// After this many moves back a route stays on the loop thread.
const INLINE_MAX_DEMOTIONS: u32 = 6;

/// When the Python thread last turned its event loop (`Runtime.heartbeat`, called from
/// a timer on the loop). A thread stuck in a handler stops the beats: `/health/live`
/// then answers 503 after `timeouts.workerTimeout`.
pub struct Heartbeat {
    epoch: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
    timeout: Duration,
    /// Serving over a socket (a TestClient runs its loop only on demand: never judged).
    armed: AtomicBool,
    /// The Python side closed the server normally: nothing to force any more.
    finished: AtomicBool,
}

impl Heartbeat {
    fn new(timeout: Duration) -> Self {
        Self {
            epoch: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
            timeout,
            armed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn beat(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Time since the last beat.
    fn silent(&self) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(self.last_ms.load(Ordering::Acquire)))
    }

    /// The loop beat recently (Python's timer fires every `timeout / 4`, 50 ms to 1 s).
    fn turning(&self) -> bool {
        let interval = (self.timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        self.silent() <= interval * 2
    }

    fn check(&self) -> Result<(), String> {
        let silent = self.silent();
        if self.armed.load(Ordering::Acquire) && silent >= self.timeout {
            return Err(format!(
                "the Python thread has not turned its event loop for {:.1} s (worker timeout {:.1} s)",
                silent.as_secs_f64(),
                self.timeout.as_secs_f64()
            ));
        }
        Ok(())
    }
}

/// Time the shutdown hooks get after the drain when the loop still turns (as the
/// supervisor's `HOOK_GRACE`).
const HOOK_GRACE: Duration = Duration::from_secs(2);

/// After SIGTERM/SIGINT the process ends within `limit` whatever the Python thread does:
/// a handler in `time.sleep(1000)` cannot keep it alive (a second signal ends it at once).
async fn exit_after_signal(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    limit: Duration,
    heartbeat: Arc<Heartbeat>,
) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let second = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let waited = tokio::select! {
        () = tokio::time::sleep(limit) => {
            // The loop still turns: it is running the shutdown hooks; give them a moment.
            if heartbeat.turning() {
                tokio::time::sleep(HOOK_GRACE).await;
            }
            true
        }
        () = second => {
            // A turning loop quits on its own at a second signal (`Executor._on_signal`).
            if heartbeat.turning() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            false
        }
    };
    if heartbeat.finished.load(Ordering::Acquire) {
        return; // the process is ending on its own (e.g. a script that goes on after `run()`)
    }
    let why = if waited {
        format!(
            "still running {:.1} s after the stop signal (is a handler stuck?)",
            limit.as_secs_f64()
        )
    } else {
        "a second stop signal".to_owned()
    };
    tracing::error!("{why}: exiting now");
    eprintln!("cello: {why}: exiting now");
    std::process::exit(1);
}

/// A compiled app: routes, handlers, config and (once started) the tokio runtime.
#[pyclass(frozen, module = "cello._cello")]
pub struct Runtime {
    shared: Arc<Shared>,
    /// Access records waiting for the loop thread.
    access: Arc<AccessBuffer>,
    queue: Arc<QueueBound>,
    heartbeat: Arc<Heartbeat>,
    handlers: Arc<Handlers>,
    ctx: Arc<Ctx>,
    io: Io,
    listener: Mutex<Option<Listener>>,
    app: App,
}

/// The listening socket `fd`, taken over (the caller has given up its own handle).
// The one hand-over of a raw descriptor: std has no safe way to adopt an inherited socket.
#[allow(unsafe_code)]
fn inherited_listener(fd: i32) -> PyResult<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err("fd must be a listening socket"));
    }
    // SAFETY: the worker passes a descriptor it has detached from its Python socket object,
    // so nothing else closes it; from here the listener owns it.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    Ok(std::net::TcpListener::from(owned))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
    /// `routes[i] = (methods, path, blocking)` leads to `endpoints[i]`; the indices in
    /// `websocket_routes` are WebSocket routes (GET upgrades); `body_limits[i]` is that
    /// route's own `max_body_size` (`None`: `limits.maxBodySize`). The routes in
    /// `inline_routes` may run on the I/O thread once proven fast (`None`: none).
    #[new]
    #[pyo3(signature = (config_json, routes, endpoints, hooks, response_type, event_loop, websocket_routes = Vec::new(), body_limits = None, inline_routes = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        config_json: &str,
        routes: Vec<(Vec<String>, String, bool)>,
        endpoints: Vec<Py<PyAny>>,
        hooks: Py<PyAny>,
        response_type: Py<PyAny>,
        event_loop: Py<PyAny>,
        websocket_routes: Vec<usize>,
        body_limits: Option<Vec<Option<u64>>>,
        inline_routes: Option<Vec<usize>>,
    ) -> PyResult<Self> {
        if routes.len() != endpoints.len() {
            return Err(PyValueError::new_err("routes and endpoints differ in length"));
        }
        let config = ServerConfig::from_json(config_json).map_err(config_err)?;
        let shared = Arc::new(Shared::new().map_err(|e| PyRuntimeError::new_err(e.to_string()))?);
        let queue = Arc::new(QueueBound {
            queued: std::sync::atomic::AtomicU64::new(0),
            max: config.limits.max_queued_requests,
        });
        let heartbeat = Arc::new(Heartbeat::new(Duration::from_secs_f64(config.timeouts.worker_timeout)));
        let pool_all = config.threadpool.adaptive && config.threadpool.offload_threshold_ms == 0;
        let off_loop = inline_routes.unwrap_or_default();
        let handlers = Arc::new(Handlers {
            exec: routes
                .iter()
                .enumerate()
                .map(|(i, (_, _, blocking))| RouteExec::new(*blocking, pool_all, off_loop.contains(&i)))
                .collect(),
            endpoints,
            ctx: std::sync::OnceLock::new(),
            inline: !off_loop.is_empty(),
            draining: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        let endpoint: Arc<dyn Endpoint> = Arc::new(PyEndpoint {
            shared: shared.clone(),
            handler_timeout: Duration::from_secs_f64(config.timeouts.handler),
            queue: queue.clone(),
            handlers: handlers.clone(),
        });
        let ws_endpoint: Arc<dyn Endpoint> = Arc::new(crate::websocket::WsEndpoint {
            shared: shared.clone(),
            event_loop: Arc::new(event_loop.clone_ref(py)),
            handler_timeout: Duration::from_secs_f64(config.timeouts.handler),
            queue: queue.clone(),
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
            let target = if websocket_routes.contains(&i) {
                Target::WebSocket(ws_endpoint.clone())
            } else {
                Target::Endpoint(endpoint.clone())
            };
            let index = builder
                .route_with(&methods, path, target, options)
                .map_err(server_err)?;
            debug_assert_eq!(index, i);
        }
        let bridge = shared.clone();
        let access = Arc::new(AccessBuffer::new(Arc::new(move || bridge.push(Job::FlushAccess))));
        let buffer = access.clone();
        let app = builder
            .access_log(Arc::new(move |rec| buffer.push(rec)))
            .build()
            .map_err(server_err)?;
        let state = app.state().clone();
        if let Some(health) = &state.health {
            let hb = heartbeat.clone();
            health.set_liveness(Arc::new(move || hb.check()));
        }
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
        let layout = crate::convert::ResponseLayout::of(response_type.bind(py));
        let ctx = Arc::new(Ctx {
            hooks,
            layout,
            response_type,
            event_loop,
            state,
            io: std::sync::OnceLock::new(),
            coroutine_type,
            task_type,
            eager_kwargs,
            stats: Stats::default(),
        });
        let _ = handlers.ctx.set(Arc::downgrade(&ctx));
        Ok(Self {
            shared,
            access,
            queue,
            heartbeat,
            handlers,
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
        self.handlers.draining.store(true, Ordering::Release);
        let done = self.drain_jobs(py);
        self.handlers.draining.store(false, Ordering::Release);
        done
    }

    /// Bind the listener now (so bind errors surface before hooks run); returns (host, port).
    /// With `fd`, accept on that listening socket instead (the supervisor's socket for a
    /// worker slot): the descriptor is taken over and closed with the listener, so once the
    /// worker stops accepting it holds no copy that would keep the socket open.
    #[pyo3(signature = (fd = None))]
    fn bind(&self, fd: Option<i32>) -> PyResult<(String, u16)> {
        let listener = match fd {
            None => self.app.bind().map_err(server_err)?,
            Some(fd) => Listener::from_std(inherited_listener(fd)?).map_err(server_err)?,
        };
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
        self.heartbeat.beat();
        self.heartbeat.armed.store(true, Ordering::Release);
        if handle_signals {
            // Registered here, synchronously, so a signal right after start is seen.
            let _entered = handle.enter();
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(term), Ok(int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                handle.spawn(exit_after_signal(term, int, opts.drain_timeout, self.heartbeat.clone()));
            }
        }
        handle.spawn(async move {
            let res = app.serve(listener, opts).await;
            shared.push(Job::Stopped(res.err().map(|e| e.to_string())));
        });
        Ok(())
    }

    /// Serve a gRPC server's services on this HTTP port too, for `application/grpc*`
    /// requests (`None`: no more).
    #[pyo3(signature = (core = None))]
    fn set_grpc(&self, core: Option<Bound<'_, crate::grpc::server::GrpcCore>>) {
        self.ctx.state.grpc.set(core.map(|c| c.get().http_endpoint()));
    }

    /// The event loop turned (called from a timer on the loop; see `Heartbeat`).
    fn heartbeat(&self) {
        self.heartbeat.beat();
    }

    /// The server was closed normally (shutdown hooks done): the forced exit after a
    /// stop signal is no longer needed.
    fn finished(&self) {
        self.handlers.stopping.store(true, Ordering::Release);
        self.heartbeat.finished.store(true, Ordering::Release);
        self.heartbeat.armed.store(false, Ordering::Release);
    }

    /// `timeouts.workerTimeout` in seconds.
    #[getter]
    fn worker_timeout(&self) -> f64 {
        self.heartbeat.timeout.as_secs_f64()
    }

    /// Drop cached responses carrying one of `tags` (every entry when `tags` is empty);
    /// returns how many entries the cache held before.
    fn invalidate_cache(&self, tags: Vec<String>) -> u64 {
        self.app.state().cache.as_ref().map_or(0, |c| c.invalidate(&tags))
    }

    /// Stop accepting and drain; `on_stopped` is called on the loop when done.
    fn stop(&self) {
        self.handlers.stopping.store(true, Ordering::Release);
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
    fn drain_jobs(&self, py: Python<'_>) -> PyResult<()> {
        let jobs = self.shared.take();
        for work in jobs {
            let job = match work {
                Work::Call(call) => {
                    executor::run_call(py, call);
                    continue;
                }
                Work::Job(job) => job,
            };
            match job {
                Job::Request(tx, slot) => {
                    self.queue.leave();
                    // A client that left (or a request that timed out) while queued costs
                    // no handler call; its request was freed when it was given up.
                    let req = lock(&slot.request).take();
                    if let Some(req) = req.filter(|_| !tx.is_closed()) {
                        self.run_one(py, req, tx, slot);
                    }
                }
                Job::Cancel(slot) => {
                    if let Some(task) = lock(&slot.task).take() {
                        task.call_method0(py, "cancel")?;
                    }
                }
                Job::FlushAccess => self.access.flushed(),
                Job::Stopped(err) => {
                    self.ctx.hooks.call_method1(py, "on_stopped", (err,))?;
                }
            }
        }
        // Every drain takes the records (they need no wake-up of their own under load).
        let access = self.access.take();
        // Records become Python tuples only when the access logger would emit them (asked
        // once per batch; `logs=False` and a logger above INFO drop them here).
        if !access.is_empty() && self.ctx.hooks.bind(py).call_method0("access_enabled")?.is_truthy()? {
            let access: Vec<AccessTuple> = access.iter().map(access_tuple).collect();
            self.ctx.hooks.call_method1(py, "access", (access,))?;
        }
        Ok(())
    }

    fn run_one(&self, py: Python<'_>, req: RoutedRequest, tx: oneshot::Sender<Reply>, slot: Arc<CancelSlot>) {
        let index = req.route.target;
        if let Some(clock) = req.parts.extensions.get::<Arc<cello_server::metrics::QueueClock>>() {
            clock.dequeued();
        }
        let (Some(endpoint), Some(exec)) = (self.handlers.endpoints.get(index), self.handlers.exec.get(index)) else {
            return;
        };
        let endpoint = endpoint.bind(py);
        let request = match Bound::new(py, PyRequest::from_routed(req, &self.ctx.state)) {
            Ok(r) => r,
            Err(e) => {
                convert::fail_plain(py, &e, tx);
                return;
            }
        };
        let offloaded = exec.offload.load(Ordering::Relaxed);
        let trial = offloaded && exec.trial_due();
        if offloaded && !trial {
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
        let learning = exec.learning();
        let started = (pool.adaptive || learning).then(std::time::Instant::now);
        let result = endpoint.call1((request.clone(),));
        if let Some(started) = started {
            let took = started.elapsed();
            if pool.adaptive {
                self.adapt(py, exec, endpoint, took, trial);
            }
            if learning {
                let plain = result
                    .as_ref()
                    .is_ok_and(|r| !r.get_type().is(self.ctx.coroutine_type.bind(py)));
                exec.learn(plain && took <= INLINE_FAST);
            }
        }
        match result {
            Ok(result) => convert::respond(py, &self.ctx, result, request, tx, slot),
            Err(err) => convert::fail(py, &self.ctx, err, &request, tx),
        }
    }
}

impl Runtime {
    /// Adaptive offload: 3 slow calls in a row move a route to the pool; a fast inline
    /// trial (see [`RouteExec::trial_due`]) brings it back. Both moves are logged and
    /// counted (`cello_offload_switches_total`, `cello_offloaded_routes`).
    fn adapt(&self, py: Python<'_>, exec: &RouteExec, endpoint: &Bound<'_, PyAny>, took: Duration, trial: bool) {
        use cello_server::metrics::{OFFLOADED_ROUTES, OFFLOAD_SWITCHES};
        let threshold = self.ctx.state.config.threadpool.offload_threshold_ms;
        let slow = took.as_millis() > u128::from(threshold);
        let ms = took.as_secs_f64() * 1000.0;
        let name = || {
            endpoint
                .getattr("__name__")
                .map_or_else(|_| "?".to_owned(), |n| n.to_string())
        };
        let msg = if trial {
            if slow {
                let next = exec
                    .trial_every
                    .load(Ordering::Relaxed)
                    .saturating_mul(2)
                    .min(TRIAL_MAX);
                exec.trial_every.store(next, Ordering::Relaxed);
                return;
            }
            if !exec.offload.swap(false, Ordering::Relaxed) {
                return;
            }
            exec.strikes.store(0, Ordering::Relaxed);
            exec.trial_every.store(TRIAL_FIRST, Ordering::Relaxed);
            OFFLOADED_ROUTES.fetch_sub(1, Ordering::Relaxed);
            OFFLOAD_SWITCHES[1].fetch_add(1, Ordering::Relaxed);
            format!(
                "handler {} is fast again ({ms:.1} ms, threshold {threshold} ms); running it inline again",
                name()
            )
        } else if !slow {
            exec.strikes.store(0, Ordering::Relaxed);
            return;
        } else if exec.strikes.fetch_add(1, Ordering::Relaxed) + 1 >= ADAPTIVE_STRIKES
            && !exec.offload.swap(true, Ordering::Relaxed)
        {
            exec.since_trial.store(0, Ordering::Relaxed);
            OFFLOADED_ROUTES.fetch_add(1, Ordering::Relaxed);
            OFFLOAD_SWITCHES[0].fetch_add(1, Ordering::Relaxed);
            format!(
                "handler {} took {ms:.1} ms (threshold {threshold} ms) {ADAPTIVE_STRIKES} times in a row; running it \
                 in the thread pool (an inline trial every {TRIAL_FIRST}+ calls brings it back when it is fast)",
                name()
            )
        } else {
            return;
        };
        let _ = self.ctx.hooks.call_method1(py, "log_info", (msg,));
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.handlers.stopping.store(true, Ordering::Release);
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
