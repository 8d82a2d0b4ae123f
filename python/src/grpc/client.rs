//! The client of `GrpcChannel`: unary calls over HTTP/2 (hyper's client) with tonic's codec
//! layer, messages as bytes (Python encodes and decodes them, like the server). Its futures
//! run on a runtime of their own and are awaited through the caller loop's `Executor`.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
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
        let path = http::uri::PathAndQuery::try_from(path.as_str())
            .map_err(|e| PyValueError::new_err(format!("bad gRPC method path {path:?}: {e}")))?;
        let metadata = metadata_map(&meta_from_py(&metadata)?).map_err(PyValueError::new_err)?;
        let timeout = match timeout {
            Some(t) => {
                Some(Duration::try_from_secs_f64(t).map_err(|_| PyValueError::new_err(format!("bad timeout {t}")))?)
            }
            None => None,
        };
        let (client, origin) = (self.client.clone(), self.origin.clone());
        let handle = runtime()?.handle().clone();
        let call = async move {
            let mut grpc = tonic::client::Grpc::with_origin(client, origin);
            grpc.ready()
                .await
                .map_err(|e| GrpcStatusError::new_err((14, format!("the server is unavailable: {e}"))))?;
            let mut req = tonic::Request::new(Bytes::from(request));
            *req.metadata_mut() = metadata;
            if let Some(t) = timeout {
                req.set_timeout(t);
            }
            grpc.unary(req, path, RawCodec)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|st| status_err(&st))
        };
        let fut = async move {
            match timeout {
                // The client's own deadline, whether or not the server honours grpc-timeout.
                Some(t) => tokio::time::timeout(t, call)
                    .await
                    .unwrap_or_else(|_| Err(status_err(&Status::deadline_exceeded("the deadline passed")))),
                None => call.await,
            }
        };
        executor.get().spawn_on(py, &handle, fut, |py, b: Bytes| {
            Ok(PyBytes::new(py, &b).into_any().unbind())
        })
    }
}
