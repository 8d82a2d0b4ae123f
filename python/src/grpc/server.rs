//! The gRPC server of a worker: hyper (HTTP/2, and HTTP/1.1 for gRPC-Web) with tonic's codec
//! layer (framing, `grpc-status`, message limits, compression negotiation) for every call.
//!
//! The four call kinds share one wire format (a stream of length-prefixed messages each way,
//! then the status in trailers), so every method goes through `Grpc::streaming` with a codec
//! of raw bytes; the Python dispatcher (`cello.grpc._server`) decodes the messages, runs the
//! handler on the worker's asyncio loop and gives the kind its shape (one message for unary).
//! A call is a [`CallState`] shared by the Rust side and the Python `GrpcCall`:
//! `recv()`/`send()` move messages over bounded channels (back-pressure both ways),
//! `finish()` sets the status. The deadline (`grpc-timeout`) and a client that leaves cancel
//! the handler's asyncio task.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures_util::{Stream, StreamExt};
use http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Status, Streaming};
use tower::{Service, ServiceExt};

use crate::executor::{self, Bridge, Io, Work};

type Body = tonic::body::Body;
type BoxService = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;
type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

pyo3::create_exception!(
    cello._cello,
    GrpcStatusError,
    pyo3::exceptions::PyException,
    "A call ended with a gRPC status on the Rust side: args are (code, message)."
);

// ---- codec -----------------------------------------------------------------------------

/// Messages stay bytes in Rust: Python decodes them with the method's message types.
#[derive(Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        *self
    }
    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

// ---- metadata --------------------------------------------------------------------------

/// A metadata value: text, or binary for `-bin` keys.
#[derive(Clone)]
pub(crate) enum Meta {
    Text(String),
    Binary(Bytes),
}

/// Headers the protocol owns, not the application.
const RESERVED: [&str; 6] = [
    "te",
    "content-type",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "content-length",
];

fn request_metadata(headers: &http::HeaderMap) -> Vec<(String, Meta)> {
    let map = MetadataMap::from_headers(headers.clone());
    map.iter()
        .filter_map(|kv| match kv {
            KeyAndValueRef::Ascii(k, v) => {
                let key = k.as_str();
                (!RESERVED.contains(&key))
                    .then(|| (key.to_owned(), Meta::Text(v.to_str().unwrap_or_default().to_owned())))
            }
            KeyAndValueRef::Binary(k, v) => v.to_bytes().ok().map(|b| (k.as_str().to_owned(), Meta::Binary(b))),
        })
        .collect()
}

pub(crate) fn meta_from_py(pairs: &[(String, Bound<'_, PyAny>)]) -> PyResult<Vec<(String, Meta)>> {
    pairs
        .iter()
        .map(|(k, v)| {
            let key = k.to_ascii_lowercase();
            let value = if key.ends_with("-bin") {
                Meta::Binary(Bytes::from(v.extract::<Vec<u8>>()?))
            } else {
                Meta::Text(v.extract::<String>()?)
            };
            Ok((key, value))
        })
        .collect()
}

pub(crate) fn metadata_map(pairs: &[(String, Meta)]) -> Result<MetadataMap, String> {
    let mut map = MetadataMap::new();
    for (k, v) in pairs {
        match v {
            Meta::Binary(b) => {
                let key = MetadataKey::from_bytes(k.as_bytes()).map_err(|_| format!("bad metadata key {k:?}"))?;
                map.append_bin(key, MetadataValue::from_bytes(b));
            }
            Meta::Text(s) => {
                let key = MetadataKey::from_bytes(k.as_bytes()).map_err(|_| format!("bad metadata key {k:?}"))?;
                let value = MetadataValue::try_from(s.as_str()).map_err(|_| format!("bad metadata value for {k:?}"))?;
                map.append(key, value);
            }
        }
    }
    Ok(map)
}

/// `grpc-timeout`: at most 8 digits and a unit (gRPC over HTTP/2).
fn parse_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

// ---- one call --------------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the server shares with the calls.
struct Inner {
    bridge: Arc<Bridge<Infallible>>,
    event_loop: Arc<Py<PyAny>>,
    dispatcher: Arc<Py<PyAny>>,
    handle: Handle,
    limit: Arc<Semaphore>,
    limit_total: usize,
    max_message_size: usize,
}

/// One call, shared by its Rust driver and the Python `GrpcCall`.
struct CallState {
    path: String,
    metadata: Vec<(String, Meta)>,
    timeout: Option<Duration>,
    input: tokio::sync::Mutex<Option<Streaming<Bytes>>>,
    output: Mutex<Option<mpsc::Sender<Bytes>>>,
    status: Mutex<Option<oneshot::Sender<Status>>>,
    headers: Mutex<Vec<(String, Meta)>>,
    task: Mutex<Option<Py<PyAny>>>,
    inner: Arc<Inner>,
}

impl CallState {
    /// Set the final status (the first one wins) and close the response stream.
    fn finish(&self, status: Status) {
        if let Some(tx) = lock(&self.status).take() {
            let _ = tx.send(status);
        }
        lock(&self.output).take();
    }

    fn finished(&self) -> bool {
        lock(&self.status).is_none()
    }

    /// Cancel the handler's asyncio task (deadline passed, client gone).
    fn cancel_task(self: &Arc<Self>) {
        let me = self.clone();
        self.inner.bridge.call(move |py| {
            if let Some(task) = lock(&me.task).take() {
                if let Err(e) = task.call_method0(py, "cancel") {
                    e.write_unraisable(py, None);
                }
            }
        });
    }
}

/// The Python side of a call (`cello.grpc` wraps it).
#[pyclass(frozen, module = "cello._cello")]
pub struct GrpcCall {
    state: Arc<CallState>,
}

fn meta_to_py(py: Python<'_>, pairs: &[(String, Meta)]) -> PyResult<Vec<(String, Py<PyAny>)>> {
    pairs
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Meta::Text(s) => PyString::new(py, s).into_any().unbind(),
                Meta::Binary(b) => PyBytes::new(py, b).into_any().unbind(),
            };
            Ok((k.clone(), value))
        })
        .collect()
}

#[pymethods]
impl GrpcCall {
    /// `/package.Service/Method`.
    #[getter]
    fn path(&self) -> &str {
        &self.state.path
    }

    /// The request metadata as `(key, value)` pairs (`bytes` values for `-bin` keys).
    #[getter]
    fn metadata(&self, py: Python<'_>) -> PyResult<Vec<(String, Py<PyAny>)>> {
        meta_to_py(py, &self.state.metadata)
    }

    /// The client's time limit in seconds (`grpc-timeout`), or `None`.
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.state.timeout.map(|d| d.as_secs_f64())
    }

    /// The asyncio task running the handler: cancelled when the deadline passes or the client
    /// leaves.
    fn attach(&self, task: Py<PyAny>) {
        *lock(&self.state.task) = Some(task);
    }

    /// The next request message (`bytes`), or `None` at the end of the client's stream.
    fn recv(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let state = self.state.clone();
        let inner = &self.state.inner;
        executor::future_into_py(
            py,
            &inner.bridge,
            &inner.handle,
            &inner.event_loop,
            async move {
                let mut input = state.input.lock().await;
                match input.as_mut() {
                    Some(s) => s.message().await.map_err(|st| {
                        // tonic reports a request message over the limit as OUT_OF_RANGE;
                        // gRPC's status code table says RESOURCE_EXHAUSTED (grpc-go, grpcio).
                        let code = match st.code() {
                            Code::OutOfRange => Code::ResourceExhausted,
                            c => c,
                        };
                        GrpcStatusError::new_err((code as i32, st.message().to_owned()))
                    }),
                    None => Ok(None),
                }
            },
            |py, msg| {
                Ok(match msg {
                    Some(b) => PyBytes::new(py, &b).into_any().unbind(),
                    None => py.None(),
                })
            },
        )
    }

    /// Send a response message; resolves once the stream has room (back-pressure).
    fn send(&self, py: Python<'_>, data: Vec<u8>) -> PyResult<Py<PyAny>> {
        let max = self.state.inner.max_message_size;
        if data.len() > max {
            // Checked here rather than left to tonic's encoder, which would answer OUT_OF_RANGE.
            return Err(GrpcStatusError::new_err((
                Code::ResourceExhausted as i32,
                format!(
                    "the response message of {} bytes exceeds the limit of {max} bytes",
                    data.len()
                ),
            )));
        }
        let tx = lock(&self.state.output)
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("the call is finished"))?;
        let inner = &self.state.inner;
        executor::future_into_py(
            py,
            &inner.bridge,
            &inner.handle,
            &inner.event_loop,
            async move {
                tx.send(Bytes::from(data))
                    .await
                    .map_err(|_| PyConnectionError::new_err("the client is gone"))
            },
            |py, ()| Ok(py.None()),
        )
    }

    /// Add response headers (initial metadata); they leave with the first message.
    fn set_headers(&self, pairs: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        let pairs = meta_from_py(&pairs)?;
        metadata_map(&pairs).map_err(PyValueError::new_err)?;
        lock(&self.state.headers).extend(pairs);
        Ok(())
    }

    /// End the call with `code` (0: OK), `message`, binary `details` and trailing metadata.
    #[pyo3(signature = (code, message = String::new(), details = None, trailers = Vec::new()))]
    fn finish(
        &self,
        code: i32,
        message: String,
        details: Option<Vec<u8>>,
        trailers: Vec<(String, Bound<'_, PyAny>)>,
    ) -> PyResult<()> {
        let trailers = metadata_map(&meta_from_py(&trailers)?).map_err(PyValueError::new_err)?;
        let details = Bytes::from(details.unwrap_or_default());
        let status = Status::with_details_and_metadata(Code::from(code), message, details, trailers);
        self.state.finish(status);
        Ok(())
    }
}

/// Runs the handler of one call and ends the call when the deadline passes or the client
/// leaves; the permit holds a place of `concurrency_limit` meanwhile.
async fn drive(state: Arc<CallState>, cancel: CancellationToken, permit: tokio::sync::OwnedSemaphorePermit) {
    let inner = state.inner.clone();
    let dispatcher = inner.dispatcher.clone();
    let me = state.clone();
    let handler = executor::call_python(&inner.bridge, inner.event_loop.clone(), move |py| {
        let call = Py::new(py, GrpcCall { state: me })?;
        dispatcher.call1(py, (call,))
    });
    let deadline = async {
        match state.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        out = handler => {
            if out.is_err() {
                state.finish(Status::internal("the handler failed"));
            }
        }
        () = deadline => {
            state.finish(Status::deadline_exceeded("the deadline passed before the handler finished"));
            state.cancel_task();
        }
        () = cancel.cancelled() => {
            if !state.finished() {
                state.finish(Status::cancelled("the client cancelled the call"));
                state.cancel_task();
            }
        }
    }
    drop(permit);
}

/// The tonic service of one call.
struct Call {
    inner: Arc<Inner>,
    path: String,
    metadata: Vec<(String, Meta)>,
    timeout: Option<Duration>,
}

impl Service<tonic::Request<Streaming<Bytes>>> for Call {
    type Response = tonic::Response<BoxStream>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<Streaming<Bytes>>) -> Self::Future {
        let inner = self.inner.clone();
        let (path, metadata, timeout) = (
            std::mem::take(&mut self.path),
            std::mem::take(&mut self.metadata),
            self.timeout,
        );
        Box::pin(async move {
            let permit = inner
                .limit
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Status::unavailable("the server is stopping"))?;
            let (tx, mut rx) = mpsc::channel::<Bytes>(16);
            let (status_tx, status_rx) = oneshot::channel::<Status>();
            let state = Arc::new(CallState {
                path,
                metadata,
                timeout,
                input: tokio::sync::Mutex::new(Some(req.into_inner())),
                output: Mutex::new(Some(tx)),
                status: Mutex::new(Some(status_tx)),
                headers: Mutex::new(Vec::new()),
                task: Mutex::new(None),
                inner: inner.clone(),
            });
            let cancel = CancellationToken::new();
            // Dropped with the response stream (or this future): the handler is cancelled.
            let guard = cancel.clone().drop_guard();
            tokio::spawn(drive(state.clone(), cancel, permit));
            let first = rx.recv().await;
            let headers = metadata_map(&lock(&state.headers)).map_err(Status::internal)?;
            let stream: BoxStream = match first {
                Some(msg) => {
                    let rest = tokio_stream_from(rx);
                    Box::pin(
                        futures_util::stream::once(async move { Ok(msg) })
                            .chain(rest)
                            .chain(final_status(status_rx, guard)),
                    )
                }
                None => match status_rx.await {
                    Ok(st) if st.code() == Code::Ok => Box::pin(final_status_ready(st, guard)),
                    Ok(st) => return Err(st),
                    Err(_) => return Err(Status::internal("the handler ended without a status")),
                },
            };
            let mut resp = tonic::Response::new(stream);
            *resp.metadata_mut() = headers;
            Ok(resp)
        })
    }
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Bytes>) -> impl Stream<Item = Result<Bytes, Status>> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|m| m.map(Ok)))
}

/// The end of the response stream: an error status, or OK with trailing metadata (tonic
/// writes a status item into the trailers; a plain OK needs no item).
fn final_status(
    rx: oneshot::Receiver<Status>,
    guard: tokio_util::sync::DropGuard,
) -> impl Stream<Item = Result<Bytes, Status>> + Send {
    futures_util::stream::once(async move {
        let st = rx
            .await
            .unwrap_or_else(|_| Status::internal("the handler ended without a status"));
        drop(guard);
        st
    })
    .filter_map(|st| async move { status_item(st) })
}

fn final_status_ready(
    st: Status,
    guard: tokio_util::sync::DropGuard,
) -> impl Stream<Item = Result<Bytes, Status>> + Send {
    drop(guard);
    futures_util::stream::iter(status_item(st))
}

fn status_item(st: Status) -> Option<Result<Bytes, Status>> {
    if st.code() == Code::Ok && st.metadata().is_empty() {
        None
    } else {
        Some(Err(st))
    }
}

// ---- the router ----------------------------------------------------------------------

/// Health and reflection by path, every other method to Python.
#[derive(Clone)]
struct Router {
    inner: Arc<Inner>,
    health: Option<BoxService>,
    reflection_v1: Option<BoxService>,
    reflection_v1alpha: Option<BoxService>,
}

impl Router {
    async fn route(self, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path();
        let builtin = if path.starts_with("/grpc.health.v1.Health/") {
            self.health.clone()
        } else if path.starts_with("/grpc.reflection.v1.ServerReflection/") {
            self.reflection_v1.clone()
        } else if path.starts_with("/grpc.reflection.v1alpha.ServerReflection/") {
            self.reflection_v1alpha.clone()
        } else {
            None
        };
        if let Some(svc) = builtin {
            return match svc.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        }
        let call = Call {
            inner: self.inner.clone(),
            path: path.to_owned(),
            metadata: request_metadata(req.headers()),
            timeout: parse_timeout(req.headers()),
        };
        let max = self.inner.max_message_size;
        // gzip requests are accepted; the answer is compressed when the request was and the
        // client accepts gzip (grpc-go's rule: no cost for clients that do not compress).
        let gzip_request = req
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() == b"gzip");
        let mut grpc = tonic::server::Grpc::new(RawCodec)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        if gzip_request {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        grpc.streaming(call, req).await
    }
}

fn boxed<S>(svc: S) -> BoxService
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    tower::util::BoxCloneSyncService::new(svc)
}

// ---- the server ----------------------------------------------------------------------

/// `cello._cello.GrpcCore`: one gRPC listener of a worker, its handlers on `loop`.
#[pyclass(frozen, module = "cello._cello")]
pub struct GrpcCore {
    bridge: Arc<Bridge<Infallible>>,
    io: Io,
    event_loop: Py<PyAny>,
    attached: AtomicBool,
    stop: CancellationToken,
    /// How long `stop` lets calls in flight run (set before `stop` is cancelled).
    grace: Arc<Mutex<Duration>>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
    local: SocketAddr,
    /// The same services for `application/grpc*` requests on the HTTP port.
    http_port: Arc<HttpPort>,
}

impl GrpcCore {
    /// The endpoint the HTTP port hands gRPC requests to.
    pub fn http_endpoint(&self) -> Arc<dyn cello_server::grpc::GrpcEndpoint> {
        self.http_port.clone()
    }
}

/// Bind `address` (SO_REUSEPORT: every worker of the supervisor binds the same port).
fn bind(address: &str) -> PyResult<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = address
        .to_socket_addrs()
        .map_err(|e| PyValueError::new_err(format!("bad gRPC address {address:?}: {e}")))?
        .next()
        .ok_or_else(|| PyValueError::new_err(format!("gRPC address {address:?} resolves to nothing")))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv4 too, like every gRPC server.
        let _ = socket.set_only_v6(false);
    }
    socket
        .bind(&addr.into())
        .map_err(|e| PyConnectionError::new_err(format!("cannot bind gRPC to {address}: {e}")))?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[pymethods]
impl GrpcCore {
    /// Bind `address` and serve on `loop`: every call runs `dispatcher(call)` there.
    /// `reflection` holds encoded `FileDescriptorSet`s (`None`: no reflection service);
    /// `health` names the services reported SERVING; `cors` is the app's CORS section (JSON,
    /// as `enable_cors` made it) for gRPC-Web on this listener, `None`: any origin.
    #[staticmethod]
    #[pyo3(signature = (event_loop, dispatcher, address, *, max_message_size, concurrency_limit, keepalive_secs, enable_web, reflection, health, cors = None))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        py: Python<'_>,
        event_loop: Py<PyAny>,
        dispatcher: Py<PyAny>,
        address: &str,
        max_message_size: usize,
        concurrency_limit: usize,
        keepalive_secs: f64,
        enable_web: bool,
        reflection: Option<Vec<Vec<u8>>>,
        health: Vec<String>,
        cors: Option<String>,
    ) -> PyResult<Py<Self>> {
        let keepalive = if keepalive_secs.is_finite() && keepalive_secs >= 0.0 {
            (keepalive_secs > 0.0).then(|| Duration::from_secs_f64(keepalive_secs))
        } else {
            return Err(PyValueError::new_err(format!(
                "keepalive_secs must be 0 (off) or a positive number of seconds, not {keepalive_secs}"
            )));
        };
        let cors = if enable_web {
            Some(web_cors(cors.as_deref()).map_err(PyValueError::new_err)?)
        } else {
            None
        };
        let bridge = Arc::new(Bridge::new().map_err(|e| PyRuntimeError::new_err(e.to_string()))?);
        let io = Io::default();
        let handle = io.handle(&bridge)?;
        let std_listener = bind(address)?;
        let local = std_listener.local_addr()?;
        let inner = Arc::new(Inner {
            bridge: bridge.clone(),
            event_loop: Arc::new(event_loop.clone_ref(py)),
            dispatcher: Arc::new(dispatcher),
            handle: handle.clone(),
            limit: Arc::new(Semaphore::new(concurrency_limit.max(1))),
            limit_total: concurrency_limit.max(1),
            max_message_size,
        });
        let (reflection_v1, reflection_v1alpha) = match reflection {
            Some(sets) => {
                let (v1, v1alpha) = reflection_services(&sets).map_err(PyValueError::new_err)?;
                (Some(v1), Some(v1alpha))
            }
            None => (None, None),
        };
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let router = Router {
            inner,
            health: Some(boxed(health_service)),
            reflection_v1,
            reflection_v1alpha,
        };
        let http_port = Arc::new(HttpPort {
            router: router.clone(),
            web: enable_web.then(tonic_web::GrpcWebLayer::new),
        });
        let stop = CancellationToken::new();
        let grace = Arc::new(Mutex::new(Duration::from_secs(5)));
        let (done_tx, done_rx) = oneshot::channel();
        let token = stop.clone();
        let listener_port = http_port.clone();
        let serve_grace = grace.clone();
        let serve_inner = router.inner.clone();
        handle.spawn(async move {
            for name in health.iter().map(String::as_str).chain([""]) {
                reporter
                    .set_service_status(name, tonic_health::ServingStatus::Serving)
                    .await;
            }
            match tokio::net::TcpListener::from_std(std_listener) {
                Ok(listener) => {
                    let service = match cors {
                        Some(cors) => Listener::Web {
                            port: listener_port,
                            cors,
                        },
                        None => Listener::Grpc(router),
                    };
                    serve(listener, service, keepalive, token, serve_grace, serve_inner).await;
                }
                Err(e) => tracing::error!("gRPC listener: {e}"),
            }
            let _ = done_tx.send(());
        });
        let this = Py::new(
            py,
            Self {
                bridge,
                io,
                event_loop,
                attached: AtomicBool::new(false),
                stop,
                grace,
                done: Mutex::new(Some(done_rx)),
                local,
                http_port,
            },
        )?;
        let bound = this.bind(py);
        let me = bound.get();
        me.event_loop
            .call_method1(py, "add_reader", (me.bridge.fd(), bound.getattr("drain")?))?;
        me.attached.store(true, Ordering::Release);
        Ok(this)
    }

    /// `(host, port)` actually bound.
    #[getter]
    fn address(&self) -> (String, u16) {
        (self.local.ip().to_string(), self.local.port())
    }

    /// Run what the I/O side queued (the loop calls this when the descriptor is readable).
    fn drain(&self, py: Python<'_>) {
        for work in self.bridge.take() {
            match work {
                Work::Call(call) => executor::run_call(py, call),
                Work::Job(never) => match never {},
            }
        }
    }

    /// Stop accepting (the listener closes at once); calls in flight get `grace` seconds,
    /// then they are cancelled. Awaitable.
    #[pyo3(signature = (grace = 5.0))]
    fn stop(&self, py: Python<'_>, grace: f64) -> PyResult<Py<PyAny>> {
        let grace = Duration::try_from_secs_f64(grace)
            .map_err(|_| PyValueError::new_err(format!("grace must be a number of seconds >= 0, not {grace}")))?;
        *lock(&self.grace) = grace;
        self.stop.cancel();
        let done = lock(&self.done).take();
        let handle = self.io.handle(&self.bridge)?;
        executor::future_into_py(
            py,
            &self.bridge,
            &handle,
            &self.event_loop,
            async move {
                if let Some(done) = done {
                    let _ = tokio::time::timeout(grace + Duration::from_secs(2), done).await;
                }
                Ok(())
            },
            |py, ()| Ok(py.None()),
        )
    }

    /// Detach from the loop and stop the runtime (after `stop`).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.stop.cancel();
        if self.attached.swap(false, Ordering::AcqRel) {
            self.event_loop.call_method1(py, "remove_reader", (self.bridge.fd(),))?;
        }
        self.io.shutdown();
        Ok(())
    }
}

fn reflection_services(sets: &[Vec<u8>]) -> Result<(BoxService, BoxService), String> {
    use prost::Message as _;
    let mut v1 = tonic_reflection::server::Builder::configure();
    let mut v1alpha = tonic_reflection::server::Builder::configure();
    for set in sets {
        let fds = prost_types::FileDescriptorSet::decode(set.as_slice()).map_err(|e| e.to_string())?;
        v1 = v1.register_file_descriptor_set(fds.clone());
        v1alpha = v1alpha.register_file_descriptor_set(fds);
    }
    let v1 = v1.build_v1().map_err(|e| e.to_string())?;
    let v1alpha = v1alpha.build_v1alpha().map_err(|e| e.to_string())?;
    Ok((boxed(v1), boxed(v1alpha)))
}

/// One request: through the gRPC-Web layer when it is on, else straight to the router.
async fn answer<B>(router: Router, web: Option<tonic_web::GrpcWebLayer>, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    match web {
        Some(layer) => {
            let inner = tower::service_fn(move |r: Request<Body>| {
                let router = router.clone();
                async move { Ok::<_, Infallible>(router.route(r).await) }
            });
            match tower::Layer::layer(&layer, inner).oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        }
        None => router.route(req.map(Body::new)).await,
    }
}

/// What a connection of the listener is served by.
#[derive(Clone)]
enum Listener {
    /// gRPC only: straight to the router.
    Grpc(Router),
    /// gRPC-Web on: CORS (preflights answered, headers on answers), then the same path as
    /// gRPC-Web on the HTTP port.
    Web {
        port: Arc<HttpPort>,
        cors: cello_server::middleware::cors::CorsLayer,
    },
}

impl Listener {
    async fn answer(
        self,
        req: Request<hyper::body::Incoming>,
    ) -> Response<http_body_util::Either<Body, cello_server::ResponseBody>> {
        use http_body_util::Either;
        match self {
            Self::Grpc(router) => router.route(req.map(Body::new)).await.map(Either::Left),
            Self::Web { port, cors } => {
                let inner = tower::service_fn(move |r: Request<cello_server::RequestBody>| {
                    let fut = cello_server::grpc::GrpcEndpoint::call(&*port, r);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let svc = tower::Layer::layer(&cors, inner);
                match svc.oneshot(req.map(cello_server::RequestBody::Incoming)).await {
                    Ok(resp) => resp.map(Either::Right),
                    Err(never) => match never {},
                }
            }
        }
    }
}

/// The CORS of gRPC-Web on the gRPC listener: the app's `enable_cors` settings when it has
/// them (POST and gRPC-Web's request headers added when the lists are explicit), else what
/// tonic-web recommends: any origin, no credentials, preflights cached for a day. gRPC's
/// response headers are exposed either way (the CORS layer does that for gRPC-Web answers).
fn web_cors(app: Option<&str>) -> Result<cello_server::middleware::cors::CorsLayer, String> {
    use cello_config::CorsConfig;
    let cfg = match app {
        Some(json) => {
            let mut cfg: CorsConfig =
                serde_json::from_str(json).map_err(|e| format!("the app's CORS settings: {e}"))?;
            if cfg.credentials && cfg.origins.iter().any(|o| o == "*") {
                return Err("CORS: origins \"*\" cannot be combined with credentials=True".into());
            }
            if !cfg.methods.iter().any(|m| m.eq_ignore_ascii_case("POST")) {
                cfg.methods.push("POST".into());
            }
            if !cfg.headers.is_empty() {
                for h in GRPC_WEB_REQUEST_HEADERS {
                    if !cfg.headers.iter().any(|x| x.eq_ignore_ascii_case(h)) {
                        cfg.headers.push(h.into());
                    }
                }
            }
            cfg
        }
        None => CorsConfig {
            origins: vec!["*".into()],
            methods: vec!["POST".into()],
            headers: Vec::new(),
            credentials: false,
            max_age: Some(24 * 60 * 60),
            expose_headers: Vec::new(),
        },
    };
    Ok(cello_server::middleware::cors::CorsLayer::new(&cfg))
}

/// The request headers a gRPC-Web client sends (grpc-web's and tonic-web's list).
const GRPC_WEB_REQUEST_HEADERS: [&str; 5] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "authorization",
];

async fn serve(
    listener: tokio::net::TcpListener,
    service: Listener,
    keepalive: Option<Duration>,
    stop: CancellationToken,
    grace: Arc<Mutex<Duration>>,
    inner: Arc<Inner>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A PING every `keepalive`; a peer that does not answer within the same time (at most
    // 20 s, hyper's default) is dropped.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive.map_or(Duration::from_secs(20), |k| k.min(Duration::from_secs(20))));
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("gRPC accept: {e}");
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let service = service.clone();
            async move { Ok::<_, Infallible>(service.answer(req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        conns.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("gRPC connection: {e}");
            }
        });
    }
    // The port is free at once; calls in flight get the grace, then their connections are
    // dropped (which cancels their handlers).
    drop(listener);
    let grace = *lock(&grace);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
    conns.shutdown().await;
    // Each dropped call queues the cancellation of its handler, then returns its place of
    // `concurrency_limit`: once all are back, `stop` may resolve (its answer is queued after).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while inner.limit.available_permits() < inner.limit_total && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---- the HTTP port -------------------------------------------------------------------

/// tonic's body is not `Sync`, the HTTP port's boxed body must be: only `poll_frame` (with
/// `&mut self`) touches it, so the mutex is never locked (`get_mut`).
struct SyncBody(Mutex<Body>);

impl http_body::Body for SyncBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let body = self.get_mut().0.get_mut().unwrap_or_else(PoisonError::into_inner);
        Pin::new(body).poll_frame(cx).map_err(std::io::Error::other)
    }

    // Forwarded so that a trailers-only answer (an error status, no messages) goes out as one
    // HEADERS frame with END_STREAM: grpcio reads a status in headers followed by a DATA frame
    // as a missing status (UNKNOWN).
    fn is_end_stream(&self) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).size_hint()
    }
}

/// The server's services as the HTTP port's gRPC endpoint (`application/grpc*` requests).
#[derive(Clone)]
struct HttpPort {
    router: Router,
    web: Option<tonic_web::GrpcWebLayer>,
}

impl cello_server::grpc::GrpcEndpoint for HttpPort {
    fn call(&self, req: Request<cello_server::RequestBody>) -> cello_server::endpoint::ResponseFuture {
        let (router, web) = (self.router.clone(), self.web.clone());
        Box::pin(async move {
            answer(router, web, req)
                .await
                .map(|b| cello_server::ResponseBody::Boxed(http_body_util::BodyExt::boxed(SyncBody(Mutex::new(b)))))
        })
    }
}
