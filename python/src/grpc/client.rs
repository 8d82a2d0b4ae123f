//! The client of `GrpcChannel`: calls over HTTP/2 (hyper's client) with tonic's codec layer,
//! messages as bytes (Python encodes and decodes them, like the server). Its futures run on a
//! runtime of their own and are awaited through the caller loop's `Executor`. A unary call is
//! one future (`call`); a streaming call (`open`) is a [`GrpcClientStream`]: requests go out
//! through a bounded channel as Python `send`s them, responses come back through another
//! (back-pressure both ways), the final status with the last `recv`.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::codec::CompressionEncoding;
use tonic::Status;

use super::server::{meta_from_py, metadata_map, GrpcStatusError, RawCodec};
use crate::executor::Executor;

type HttpClient = Client<HttpConnector, tonic::body::Body>;

/// The clients' runtime (one thread; started on first use, so never before a fork).
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cello-grpc-client")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("gRPC client runtime: {e}")))?;
    Ok(RT.get_or_init(|| rt))
}

fn status_err(st: &Status) -> PyErr {
    GrpcStatusError::new_err((st.code() as i32, st.message().to_owned()))
}

fn parse_path(path: &str) -> PyResult<http::uri::PathAndQuery> {
    http::uri::PathAndQuery::try_from(path)
        .map_err(|e| PyValueError::new_err(format!("bad gRPC method path {path:?}: {e}")))
}

fn parse_timeout(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    timeout
        .map(|t| Duration::try_from_secs_f64(t).map_err(|_| PyValueError::new_err(format!("bad timeout {t}"))))
        .transpose()
}

/// `fut` within the client's own deadline, whether or not the server honours grpc-timeout.
async fn within<T>(
    timeout: Option<Duration>,
    fut: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match timeout {
        Some(t) => tokio::time::timeout(t, fut)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the deadline passed"))),
        None => fut.await,
    }
}

/// `cello._cello.GrpcClient(target)`: a channel to `host:port` (or `http://host:port`).
#[pyclass(frozen, module = "cello._cello")]
pub struct GrpcClient {
    client: HttpClient,
    origin: http::Uri,
}

#[pymethods]
impl GrpcClient {
    #[new]
    fn new(target: &str) -> PyResult<Self> {
        let url = if target.contains("://") {
            target.to_owned()
        } else {
            format!("http://{target}")
        };
        let origin: http::Uri = url
            .parse()
            .map_err(|e| PyValueError::new_err(format!("bad gRPC target {target:?}: {e}")))?;
        if origin.scheme_str() != Some("http") {
            return Err(PyValueError::new_err(format!(
                "gRPC target {target:?}: only plaintext http:// is supported"
            )));
        }
        let _guard = runtime()?.enter();
        let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
        Ok(Self { client, origin })
    }

    /// One unary call of `path` (`/package.Service/Method`) with the encoded `request`;
    /// awaitable through `executor`, resolves to the encoded response. A status other than OK
    /// raises `GrpcStatusError(code, message)`.
    #[pyo3(signature = (executor, path, request, timeout = None, metadata = Vec::new()))]
    fn call(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        path: String,
        request: Vec<u8>,
        timeout: Option<f64>,
        metadata: Vec<(String, Bound<'_, PyAny>)>,
    ) -> PyResult<Py<PyAny>> {
        let path = parse_path(&path)?;
        let metadata = metadata_map(&meta_from_py(&metadata)?).map_err(PyValueError::new_err)?;
        let timeout = parse_timeout(timeout)?;
        let (client, origin) = (self.client.clone(), self.origin.clone());
        let handle = runtime()?.handle().clone();
        let call = async move {
            let mut grpc =
                tonic::client::Grpc::with_origin(client, origin).accept_compressed(CompressionEncoding::Gzip);
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(format!("the server is unavailable: {e}")))?;
            let mut req = tonic::Request::new(Bytes::from(request));
            *req.metadata_mut() = metadata;
            if let Some(t) = timeout {
                req.set_timeout(t);
            }
            grpc.unary(req, path, RawCodec).await.map(tonic::Response::into_inner)
        };
        let fut = async move { within(timeout, call).await.map_err(|st| status_err(&st)) };
        executor.get().spawn_on(py, &handle, fut, |py, b: Bytes| {
            Ok(PyBytes::new(py, &b).into_any().unbind())
        })
    }

    /// Start a streaming call of `path` (any of the three streaming kinds: the wire is the
    /// same). The call runs until the server ends it, `timeout` passes, or it is cancelled
    /// (`cancel()`, or the object is dropped).
    #[pyo3(signature = (path, timeout = None, metadata = Vec::new()))]
    fn open(
        &self,
        path: String,
        timeout: Option<f64>,
        metadata: Vec<(String, Bound<'_, PyAny>)>,
    ) -> PyResult<GrpcClientStream> {
        let path = parse_path(&path)?;
        let metadata = metadata_map(&meta_from_py(&metadata)?).map_err(PyValueError::new_err)?;
        let timeout = parse_timeout(timeout)?;
        let (client, origin) = (self.client.clone(), self.origin.clone());
        let handle = runtime()?.handle().clone();
        let (req_tx, mut req_rx) = mpsc::channel::<Bytes>(16);
        let (resp_tx, resp_rx) = mpsc::channel::<Result<Bytes, Status>>(16);
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let messages = resp_tx.clone();
        let call = async move {
            let mut grpc =
                tonic::client::Grpc::with_origin(client, origin).accept_compressed(CompressionEncoding::Gzip);
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(format!("the server is unavailable: {e}")))?;
            let requests = futures_util::stream::poll_fn(move |cx| req_rx.poll_recv(cx));
            let mut req = tonic::Request::new(requests);
            *req.metadata_mut() = metadata;
            if let Some(t) = timeout {
                req.set_timeout(t);
            }
            let mut responses = grpc.streaming(req, path, RawCodec).await?.into_inner();
            while let Some(msg) = responses.message().await? {
                if messages.send(Ok(msg)).await.is_err() {
                    break; // nobody reads: dropping the stream resets it
                }
            }
            Ok::<(), Status>(())
        };
        handle.spawn(async move {
            let out = tokio::select! {
                out = within(timeout, call) => out,
                () = token.cancelled() => Err(Status::cancelled("the call was cancelled")),
            };
            if let Err(st) = out {
                let _ = resp_tx.send(Err(st)).await;
            }
        });
        Ok(GrpcClientStream {
            requests: Mutex::new(Some(req_tx)),
            responses: Arc::new(tokio::sync::Mutex::new(resp_rx)),
            cancel: cancel.clone(),
            _guard: cancel.drop_guard(),
            handle,
        })
    }
}

/// One streaming call of a [`GrpcClient`] (`cello.grpc.GrpcStream` wraps it).
#[pyclass(frozen, module = "cello._cello")]
pub struct GrpcClientStream {
    requests: Mutex<Option<mpsc::Sender<Bytes>>>,
    responses: Arc<tokio::sync::Mutex<mpsc::Receiver<Result<Bytes, Status>>>>,
    cancel: CancellationToken,
    /// Dropping the object cancels the call.
    _guard: DropGuard,
    handle: tokio::runtime::Handle,
}

#[pymethods]
impl GrpcClientStream {
    /// Send a request message; resolves to `True` once the stream took it (waiting while it is
    /// full), `False` when the requests are closed or the call is over.
    fn send(&self, py: Python<'_>, executor: &Bound<'_, Executor>, data: Vec<u8>) -> PyResult<Py<PyAny>> {
        let tx = self.requests.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let fut = async move {
            Ok(match tx {
                Some(tx) => tx.send(Bytes::from(data)).await.is_ok(),
                None => false,
            })
        };
        executor.get().spawn_on(py, &self.handle, fut, |py, ok: bool| {
            Ok(ok.into_pyobject(py)?.to_owned().into_any().unbind())
        })
    }

    /// No more requests: the server sees the end of the client's stream.
    fn close_send(&self) {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// The next response message (`bytes`), `None` once the server ended the call with OK; a
    /// status other than OK raises `GrpcStatusError(code, message)`.
    fn recv(&self, py: Python<'_>, executor: &Bound<'_, Executor>) -> PyResult<Py<PyAny>> {
        let rx = self.responses.clone();
        let fut = async move {
            match rx.lock().await.recv().await {
                Some(Ok(b)) => Ok(Some(b)),
                Some(Err(st)) => Err(status_err(&st)),
                None => Ok(None),
            }
        };
        executor.get().spawn_on(py, &self.handle, fut, |py, b: Option<Bytes>| {
            Ok(match b {
                Some(b) => PyBytes::new(py, &b).into_any().unbind(),
                None => py.None(),
            })
        })
    }

    /// End the call now (the server sees it cancelled); harmless once it is over.
    fn cancel(&self) {
        self.cancel.cancel();
        self.close_send();
    }
}
