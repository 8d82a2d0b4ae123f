//! The `Request` view handed to handlers. Everything is converted to Python
//! lazily, on first access, and cached.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use cello_server::{AppState, RoutedRequest};
use http::{HeaderMap, Method, Uri};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// The request data, owned by the view.
pub struct RequestData {
    pub method: Method,
    pub uri: Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub params: Vec<(Arc<str>, String)>,
    pub route: Option<Arc<str>>,
    pub peer: Option<SocketAddr>,
    pub tls: bool,
    /// Whether the peer is a trusted proxy (forwarded headers are honoured).
    pub peer_trusted: bool,
}

/// `cello.Request`.
#[pyclass(name = "Request", module = "cello", frozen, dict)]
pub struct PyRequest {
    pub data: RequestData,
    params: OnceLock<Py<PyDict>>,
    query: OnceLock<Py<PyDict>>,
    headers: OnceLock<Py<PyDict>>,
    json: OnceLock<Py<PyAny>>,
    context: OnceLock<Py<PyDict>>,
}

impl PyRequest {
    fn from_data(data: RequestData) -> Self {
        Self {
            data,
            params: OnceLock::new(),
            query: OnceLock::new(),
            headers: OnceLock::new(),
            json: OnceLock::new(),
            context: OnceLock::new(),
        }
    }

    /// Wrap a routed request.
    pub fn from_routed(req: RoutedRequest, state: &AppState) -> Self {
        let peer_trusted = req.peer.is_some_and(|p| !state.trusted.is_empty() && state.is_trusted(p.ip()));
        Self::from_data(RequestData {
            method: req.parts.method,
            uri: req.parts.uri,
            version: req.parts.version,
            headers: req.parts.headers,
            body: req.body,
            params: req.params,
            route: Some(req.route.template.clone()),
            peer: req.peer,
            tls: req.tls,
            peer_trusted,
        })
    }
}

fn cached<'py, T>(
    py: Python<'py>,
    cell: &OnceLock<Py<T>>,
    make: impl FnOnce() -> PyResult<Bound<'py, T>>,
) -> PyResult<Bound<'py, T>> {
    if let Some(v) = cell.get() {
        return Ok(v.bind(py).clone());
    }
    let v = make()?;
    let _ = cell.set(v.clone().unbind());
    Ok(cell.get().map_or(v, |c| c.bind(py).clone()))
}

#[pymethods]
impl PyRequest {
    #[getter]
    fn method(&self) -> &str {
        self.data.method.as_str()
    }

    #[getter]
    fn path(&self) -> String {
        percent_encoding::percent_decode_str(self.data.uri.path()).decode_utf8_lossy().into_owned()
    }

    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        cached(py, &self.params, || {
            let d = PyDict::new(py);
            for (k, v) in &self.data.params {
                d.set_item(&**k, v)?;
            }
            Ok(d)
        })
    }

    #[getter]
    fn query<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        cached(py, &self.query, || {
            let d = PyDict::new(py);
            for (k, v) in form_urlencoded::parse(self.data.uri.query().unwrap_or("").as_bytes()) {
                d.set_item(k.as_ref(), v.as_ref())?;
            }
            Ok(d)
        })
    }

    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        cached(py, &self.headers, || {
            let d = PyDict::new(py);
            for (k, v) in &self.data.headers {
                d.set_item(k.as_str(), String::from_utf8_lossy(v.as_bytes()))?;
            }
            Ok(d)
        })
    }

    #[getter]
    fn context<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        cached(py, &self.context, || Ok(PyDict::new(py)))
    }

    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data.body)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data.body).into_owned()
    }

    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(v) = self.json.get() {
            return Ok(v.bind(py).clone());
        }
        let v = crate::json::loads(py, PyBytes::new(py, &self.data.body).as_any())?;
        let _ = self.json.set(v.clone().unbind());
        Ok(v)
    }
}
