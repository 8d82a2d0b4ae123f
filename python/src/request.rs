//! The `Request` view handed to handlers. Nothing is converted to Python until asked, and
//! every conversion is cached on the request.
//!
//! Choices (see also [`headers`], [`form`] and [`parse`]):
//! * `query` / `query_params` is a dict where the last of repeated keys wins (Starlette);
//!   `query_list(key)` returns every value. `form()` and `files()` behave the same, with
//!   `form_list`/`files_list` for repeated fields.
//! * `text()` decodes with the `charset` of `Content-Type` (UTF-8 when absent or unknown),
//!   replacing invalid sequences instead of raising.
//! * `client` is the socket peer as `Address(host, port)` (a namedtuple, as in Starlette),
//!   never a forwarded address; `client_ip()`, `scheme` and `host()` honour `X-Forwarded-*`
//!   and `Forwarded` only when the peer is a configured trusted proxy.
//! * `request_id()` is `X-Request-ID` when it looks sane (1–200 of `[A-Za-z0-9-_.:+/=]`),
//!   else a UUID4 generated once per request.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use cello_server::ext::ClientInfo;
use cello_server::{AppState, RoutedRequest};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use percent_encoding::{AsciiSet, CONTROLS};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};
use pyo3::BoundObject;

pub mod form;
pub mod form_parse;
pub mod headers;
pub mod parse;

use form::UploadedFile;
use headers::Headers;
use parse::latin1;

/// The request data, owned by the view.
pub struct RequestData {
    pub method: Method,
    pub uri: Uri,
    pub version: http::Version,
    pub headers: Arc<HeaderMap>,
    pub body: Bytes,
    pub params: Vec<(Arc<str>, String)>,
    pub route: Option<Arc<str>>,
    pub peer: Option<SocketAddr>,
    pub tls: bool,
    /// Whether the peer is a trusted proxy (forwarded headers are honoured).
    pub peer_trusted: bool,
    /// The trusted proxy ranges, filled only when `peer_trusted` (to walk forwarding chains).
    pub trusted: Vec<(IpAddr, u8)>,
    /// Where the app is mounted behind a proxy (`--root-path`), if anywhere.
    pub root_path: Option<Arc<str>>,
    /// The client as the stack's trusted-proxy layer resolved it (trusted peers only).
    pub client: Option<ClientInfo>,
    /// The subject of the verified TLS client certificate (mTLS), if one was presented.
    pub client_cert: Option<Arc<str>>,
    /// The id the request-id layer propagated or generated (when it is on).
    pub request_id: Option<Arc<str>>,
    /// The CSP nonce of this request (security headers with a nonce CSP).
    pub csp_nonce: Option<Arc<str>>,
    /// The user an auth layer (JWT, API key, Basic) authenticated: `context["user"]`.
    pub identity: Option<Arc<serde_json::Value>>,
    /// Basic credentials the Python `verify` callable still has to accept.
    pub pending_basic: Option<cello_server::auth::PendingBasic>,
    /// Multipart limits (`limits.maxForm*`).
    pub form_limits: form::Limits,
    /// The session the session layer loaded (`request.session`).
    pub session: Option<Arc<cello_server::session::SessionSlot>>,
    /// The CSRF layer's token for this request (`request.csrf_token()`).
    pub csrf_token: Option<Arc<str>>,
}

/// Parsed form body, Python side.
struct FormData {
    fields: Vec<(String, String)>,
    files: Vec<(String, Py<UploadedFile>)>,
}

/// `cello.Request`.
#[pyclass(name = "Request", module = "cello", frozen, dict)]
pub struct PyRequest {
    pub data: RequestData,
    params: OnceLock<Py<PyDict>>,
    query_pairs: OnceLock<Vec<(String, String)>>,
    query: OnceLock<Py<PyDict>>,
    headers: OnceLock<Py<Headers>>,
    cookies: OnceLock<Py<PyDict>>,
    body: OnceLock<Py<PyBytes>>,
    json: OnceLock<Py<PyAny>>,
    form: OnceLock<FormData>,
    form_dict: OnceLock<Py<PyDict>>,
    files_dict: OnceLock<Py<PyDict>>,
    context: OnceLock<Py<PyDict>>,
    request_id: OnceLock<Py<PyString>>,
    session: OnceLock<Py<crate::session::PySession>>,
    /// The connection of a WebSocket route's request.
    websocket: Option<Arc<crate::websocket::WsConn>>,
    /// A body the server spooled to a temporary file (`data.body` is then empty).
    spooled: Option<cello_server::spool::Spooled>,
    /// The spooled body, once something asked for all of it.
    spooled_bytes: OnceLock<bytes::Bytes>,
}

/// `ext`'s `T`, taken out, when `any` says the map holds more than the connection's facts.
fn take<T: Clone + Send + Sync + 'static>(ext: &mut http::Extensions, any: bool) -> Option<T> {
    if any {
        ext.remove::<T>()
    } else {
        None
    }
}

impl PyRequest {
    fn from_data(data: RequestData) -> Self {
        Self {
            data,
            params: OnceLock::new(),
            query_pairs: OnceLock::new(),
            query: OnceLock::new(),
            headers: OnceLock::new(),
            cookies: OnceLock::new(),
            body: OnceLock::new(),
            json: OnceLock::new(),
            form: OnceLock::new(),
            form_dict: OnceLock::new(),
            files_dict: OnceLock::new(),
            context: OnceLock::new(),
            request_id: OnceLock::new(),
            session: OnceLock::new(),
            websocket: None,
            spooled: None,
            spooled_bytes: OnceLock::new(),
        }
    }

    /// Wrap a routed request.
    pub fn from_routed(mut req: RoutedRequest, state: &AppState) -> Self {
        // A plain request carries only the connection's facts (and, with metrics, the queue
        // clock): then none of the layers' extensions below is there, and ten map lookups
        // are skipped.
        let ext = &mut req.parts.extensions;
        let known = usize::from(ext.get::<cello_server::ext::ConnInfo>().is_some())
            + usize::from(ext.get::<Arc<cello_server::metrics::QueueClock>>().is_some());
        let any = ext.len() > known;
        let client = take::<ClientInfo>(ext, any);
        let websocket = take::<Arc<crate::websocket::WsConn>>(ext, any);
        let spooled = take::<cello_server::spool::Spooled>(ext, any);
        let client_cert = take::<cello_server::tls::ClientCert>(ext, any).map(|c| c.subject);
        let request_id = take::<cello_server::middleware::request_id::RequestId>(ext, any).map(|r| r.0);
        let csp_nonce = take::<cello_server::middleware::security::CspNonce>(ext, any).map(|n| n.0);
        let identity = take::<cello_server::auth::Identity>(ext, any).map(|i| i.0);
        let pending_basic = take::<cello_server::auth::PendingBasic>(ext, any);
        let session = take::<cello_server::session::SessionHandle>(ext, any).map(|s| s.0);
        let csrf_token = take::<cello_server::csrf::CsrfToken>(ext, any).map(|t| t.0);
        let peer_trusted = req
            .peer
            .is_some_and(|p| !state.trusted.is_empty() && state.is_trusted(p.ip()));
        Self::from_data(RequestData {
            method: req.parts.method,
            uri: req.parts.uri,
            version: req.parts.version,
            headers: Arc::new(req.parts.headers),
            body: req.body,
            params: req.params,
            route: Some(req.route.template.clone()),
            peer: req.peer,
            tls: req.tls,
            peer_trusted,
            trusted: if peer_trusted {
                state.trusted.clone()
            } else {
                Vec::new()
            },
            root_path: state.root_path.clone(),
            client,
            client_cert,
            request_id,
            csp_nonce,
            identity,
            pending_basic,
            form_limits: form::Limits::from_config(&state.config.limits),
            session,
            csrf_token,
        })
        .with_websocket(websocket, spooled)
    }

    fn with_websocket(
        mut self,
        ws: Option<Arc<crate::websocket::WsConn>>,
        spooled: Option<cello_server::spool::Spooled>,
    ) -> Self {
        self.websocket = ws;
        self.spooled = spooled;
        self
    }

    /// The whole body: the buffer, or the spool file read once (only when asked for).
    fn raw_body(&self) -> PyResult<&bytes::Bytes> {
        let Some(s) = &self.spooled else {
            return Ok(&self.data.body);
        };
        if let Some(b) = self.spooled_bytes.get() {
            return Ok(b);
        }
        let data = std::fs::read(s.0.path())
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("could not read the request body: {e}")))?;
        Ok(self.spooled_bytes.get_or_init(|| bytes::Bytes::from(data)))
    }

    /// The first value of header `name`, decoded as ISO-8859-1.
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.data.headers.get(name).map(|v| latin1(v.as_bytes()))
    }

    fn header_values<'a>(&'a self, name: &'a str) -> impl DoubleEndedIterator<Item = Cow<'a, str>> + 'a {
        self.data
            .headers
            .get_all(name)
            .into_iter()
            .map(|v| latin1(v.as_bytes()))
    }

    fn media_type(&self) -> String {
        self.header("content-type")
            .map(|c| parse::media_type(&c))
            .unwrap_or_default()
    }

    fn query_pairs(&self) -> &[(String, String)] {
        self.query_pairs.get_or_init(|| {
            form_urlencoded::parse(self.data.uri.query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.data
            .trusted
            .iter()
            .any(|(net, len)| cello_server::service::in_cidr(ip, *net, *len))
    }

    fn scheme_str(&self) -> &'static str {
        if let Some(c) = &self.data.client {
            if let Some(s) = c.scheme {
                return s;
            }
        } else if self.data.peer_trusted {
            if let Some(p) = cello_server::forwarded::forwarded_scheme(&self.data.headers) {
                return p;
            }
        }
        if self.data.tls || self.data.uri.scheme_str() == Some("https") {
            "https"
        } else {
            "http"
        }
    }

    fn host_string(&self) -> String {
        if let Some(c) = &self.data.client {
            if let Some(h) = &c.host {
                return h.clone();
            }
        } else if self.data.peer_trusted {
            if let Some(h) = cello_server::forwarded::forwarded_host(&self.data.headers) {
                return h;
            }
        }
        if let Some(h) = self.header("host") {
            if parse::valid_host(h.trim()) {
                return h.trim().to_owned();
            }
        }
        match self.data.uri.authority() {
            Some(a) if parse::valid_host(a.as_str()) => a.as_str().to_owned(),
            _ => "localhost".to_owned(),
        }
    }

    fn client_ip_addr(&self) -> Option<IpAddr> {
        if let Some(c) = &self.data.client {
            return Some(c.ip);
        }
        let peer = self.data.peer.map(|p| parse::canonical_ip(p.ip()));
        if !self.data.peer_trusted {
            return peer;
        }
        peer.map(|p| cello_server::forwarded::client_ip(p, &self.data.headers, |ip| self.is_trusted(ip)))
    }

    fn form_data(&self, py: Python<'_>) -> PyResult<&FormData> {
        if let Some(f) = self.form.get() {
            return Ok(f);
        }
        let mt = self.media_type();
        let parsed = if mt == "application/x-www-form-urlencoded" {
            form::urlencoded(self.raw_body()?)
        } else if mt.starts_with("multipart/") {
            let ct = self.header("content-type").map(Cow::into_owned).unwrap_or_default();
            // A spooled body is parsed from its file, never read into memory whole.
            let source = match (&self.spooled, self.spooled_bytes.get()) {
                (Some(s), None) => form::Source::File(s.0.path().to_path_buf()),
                _ => form::Source::Memory(self.raw_body()?.clone()),
            };
            let limits = self.data.form_limits;
            py.detach(move || form::multipart(&ct, source, limits))
                .map_err(|e| form::refused(py, e))?
        } else {
            form::Parsed::default()
        };
        let mut files = Vec::with_capacity(parsed.files.len());
        for part in parsed.files {
            let name = part.name.clone();
            files.push((name, Py::new(py, UploadedFile::new(part))?));
        }
        let _ = self.form.set(FormData {
            fields: parsed.fields,
            files,
        });
        Ok(self.form.get().expect("just set"))
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

/// `Address(host, port)`: a namedtuple type created once.
fn address_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static ADDRESS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    ADDRESS
        .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            let kwargs = PyDict::new(py);
            kwargs.set_item("module", "cello")?;
            let nt = py.import("collections")?.getattr("namedtuple")?;
            Ok(nt.call(("Address", ["host", "port"]), Some(&kwargs))?.unbind())
        })
        .map(|t| t.bind(py))
}

/// Characters percent-encoded in a path given to the Python constructor (`%` is kept, so
/// already-encoded paths stay as they are; non-ASCII is encoded as UTF-8).
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^');

fn build_uri(path: &str, query: Option<&Bound<'_, PyAny>>) -> PyResult<Uri> {
    let (origin, rest) = match path.find("://") {
        Some(i) if path.starts_with("http://") || path.starts_with("https://") => {
            let after = &path[i + 3..];
            let end = after.find(['/', '?']).map_or(path.len(), |j| i + 3 + j);
            (&path[..end], &path[end..])
        }
        _ => ("", path),
    };
    let mut target = String::with_capacity(rest.len() + 1);
    if !rest.starts_with('/') {
        target.push('/');
    }
    target.extend(percent_encoding::utf8_percent_encode(rest, PATH_ESCAPE));
    if let Some(q) = query.filter(|q| !q.is_none()) {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        let items = if let Ok(d) = q.cast::<PyDict>() {
            d.items().into_any()
        } else {
            q.clone()
        };
        for item in items.try_iter()? {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            let k = k.str()?;
            if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
                for each in v.try_iter()? {
                    ser.append_pair(k.to_str()?, each?.str()?.to_str()?);
                }
            } else {
                ser.append_pair(k.to_str()?, v.str()?.to_str()?);
            }
        }
        let encoded = ser.finish();
        if !encoded.is_empty() {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(&encoded);
        }
    }
    Uri::try_from(format!("{origin}{target}"))
        .map_err(|e| PyValueError::new_err(format!("invalid request path {path:?}: {e}")))
}

/// Header bytes from a Python str (ISO-8859-1 when possible, else UTF-8) or bytes.
fn header_bytes(v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let s = v.str()?;
    let s = s.to_str()?;
    if s.chars().all(|c| u32::from(c) <= 0xff) {
        Ok(s.chars().map(|c| c as u8).collect())
    } else {
        Ok(s.as_bytes().to_vec())
    }
}

fn build_headers(headers: Option<&Bound<'_, PyAny>>) -> PyResult<HeaderMap> {
    let mut map = HeaderMap::new();
    let Some(h) = headers.filter(|h| !h.is_none()) else {
        return Ok(map);
    };
    let items = if let Ok(hh) = h.cast::<Headers>() {
        return Ok((*hh.get().map).clone());
    } else if let Ok(items) = h.call_method0("items") {
        items
    } else {
        h.clone()
    };
    for item in items.try_iter()? {
        let (k, v): (String, Bound<'_, PyAny>) = item?.extract()?;
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("invalid header name {k:?}")))?;
        let value = HeaderValue::from_bytes(&header_bytes(&v)?)
            .map_err(|_| PyValueError::new_err(format!("invalid value for header {k:?}")))?;
        map.append(name, value);
    }
    Ok(map)
}

fn body_bytes(body: Option<&Bound<'_, PyAny>>) -> PyResult<Bytes> {
    let Some(b) = body.filter(|b| !b.is_none()) else {
        return Ok(Bytes::new());
    };
    if let Ok(b) = b.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if let Ok(s) = b.cast::<PyString>() {
        return Ok(Bytes::copy_from_slice(s.to_str()?.as_bytes()));
    }
    if let Ok(ba) = b.cast::<PyByteArray>() {
        return Ok(Bytes::from(ba.to_vec()));
    }
    if b.is_instance_of::<PyMemoryView>() {
        return Ok(Bytes::from(b.call_method0("tobytes")?.extract::<Vec<u8>>()?));
    }
    Err(PyTypeError::new_err(format!(
        "body must be bytes or str, not {}",
        b.get_type().name()?
    )))
}

fn parse_int(s: &str) -> Option<i64> {
    s.trim().parse::<i64>().ok()
}

fn parse_float(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

fn or_default<'py, T: IntoPyObject<'py>>(
    py: Python<'py>,
    v: Option<T>,
    default: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match v {
        Some(v) => Ok(v.into_pyobject(py).map_err(Into::into)?.into_any().into_bound()),
        None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
    }
}

#[pymethods]
impl PyRequest {
    /// The body as an async iterator of `bytes` chunks, read from memory or from the
    /// temporary file a large body was spooled to (`async for chunk in request.stream()`).
    fn stream(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let module = py.import("cello._body")?;
        let out = match &self.spooled {
            Some(s) => module.call_method1("stream", (py.None(), s.0.path().to_string_lossy().into_owned()))?,
            None => module.call_method1("stream", (PyBytes::new(py, &self.data.body), py.None()))?,
        };
        Ok(out.unbind())
    }

    /// Where a large body was spooled (`None` for bodies kept in memory); for tests.
    fn _spool_path(&self) -> Option<String> {
        self.spooled.as_ref().map(|s| s.0.path().to_string_lossy().into_owned())
    }

    /// The `Last-Event-ID` header of an SSE reconnection (`None` on a first connection).
    #[getter]
    fn last_event_id(&self) -> Option<String> {
        self.header("last-event-id").map(Cow::into_owned)
    }

    /// The WebSocket connection of a WebSocket route's request (`None` otherwise).
    fn _websocket(&self) -> Option<crate::websocket::WebSocketConn> {
        self.websocket.clone().map(crate::websocket::WebSocketConn::new)
    }

    /// `Request(method, path, params=None, query=None, headers=None, body=None, *,
    /// client=None, trusted_proxies=None)`: a request built by hand (tests). `path` may carry
    /// a query string or be an absolute `http(s)://host/...` URL; `query` values may be lists;
    /// `headers` a dict or a list of pairs; `body` bytes or str; `client` an `(ip, port)`
    /// peer; `trusted_proxies` IPs/CIDRs whose forwarded headers `client_ip()` honours.
    #[new]
    #[pyo3(signature = (method, path, params=None, query=None, headers=None, body=None, *, client=None, trusted_proxies=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        method: &str,
        path: &str,
        params: Option<&Bound<'_, PyAny>>,
        query: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        body: Option<&Bound<'_, PyAny>>,
        client: Option<(String, u16)>,
        trusted_proxies: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| PyValueError::new_err(format!("invalid method {method:?}")))?;
        let uri = build_uri(path, query)?;
        let mut param_list = Vec::new();
        if let Some(p) = params.filter(|p| !p.is_none()) {
            let items = if let Ok(d) = p.cast::<PyDict>() {
                d.items().into_any()
            } else {
                p.call_method0("items")?
            };
            for item in items.try_iter()? {
                let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
                param_list.push((Arc::<str>::from(k.str()?.to_str()?), v.str()?.to_str()?.to_owned()));
            }
        }
        let peer = match client {
            Some((host, port)) => {
                let ip: IpAddr = host
                    .parse()
                    .map_err(|_| PyValueError::new_err(format!("client host must be an IP address, not {host:?}")))?;
                Some(SocketAddr::new(ip, port))
            }
            None => None,
        };
        let mut trusted = Vec::new();
        for p in trusted_proxies.unwrap_or_default() {
            trusted.push(
                cello_config::parse_cidr(&p)
                    .ok_or_else(|| PyValueError::new_err(format!("invalid trusted proxy {p:?}")))?,
            );
        }
        let peer_trusted = peer.is_some_and(|p| {
            trusted
                .iter()
                .any(|(net, len)| cello_server::service::in_cidr(p.ip(), *net, *len))
        });
        let tls = uri.scheme_str() == Some("https");
        Ok(Self::from_data(RequestData {
            method,
            uri,
            version: http::Version::HTTP_11,
            headers: Arc::new(build_headers(headers)?),
            body: body_bytes(body)?,
            params: param_list,
            route: None,
            peer,
            tls,
            peer_trusted,
            trusted: if peer_trusted { trusted } else { Vec::new() },
            root_path: None,
            client: None,
            client_cert: None,
            request_id: None,
            csp_nonce: None,
            identity: None,
            pending_basic: None,
            form_limits: form::Limits::default(),
            session: None,
            csrf_token: None,
        }))
    }

    /// The session (dict-like, see `cello.Session`) when `app.enable_session(...)` is on,
    /// else `None`.
    /// A value assigned to `request.session` (Python session middleware of 1.x apps does so)
    /// is kept in the instance `__dict__` and wins.
    #[getter]
    fn session<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let dict = slf.getattr("__dict__")?;
        if let Some(own) = dict.cast::<PyDict>()?.get_item("session")? {
            return Ok(Some(own));
        }
        let this = slf.get();
        let Some(slot) = &this.data.session else {
            return Ok(None);
        };
        cached(py, &this.session, || {
            Bound::new(py, crate::session::PySession::new(py, slot.clone())?)
        })
        .map(|s| Some(s.into_any()))
    }

    #[setter]
    fn set_session(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) -> PyResult<()> {
        let dict = slf.getattr("__dict__")?;
        dict.cast::<PyDict>()?.set_item("session", value)
    }

    /// The CSRF token of this request (for a form field or a header), when
    /// `app.enable_csrf(...)` is on; also `request.context["csrf_token"]`.
    fn csrf_token(&self) -> PyResult<String> {
        self.data.csrf_token.as_deref().map(str::to_owned).ok_or_else(|| {
            pyo3::exceptions::PyRuntimeError::new_err(
                "request.csrf_token() needs CSRF protection: call app.enable_csrf() (the path may also be exempt)",
            )
        })
    }

    #[getter]
    fn method(&self) -> &str {
        self.data.method.as_str()
    }

    /// The percent-decoded path (invalid UTF-8 replaced).
    #[getter]
    fn path(&self) -> String {
        percent_encoding::percent_decode_str(self.data.uri.path())
            .decode_utf8_lossy()
            .into_owned()
    }

    /// The route template that matched (`/users/{id}`), None for hand-built requests.
    #[getter]
    fn route(&self) -> Option<&str> {
        self.data.route.as_deref()
    }

    /// `"1.0"`, `"1.1"`, `"2"` or `"3"`.
    #[getter]
    fn http_version(&self) -> &'static str {
        match self.data.version {
            http::Version::HTTP_09 => "0.9",
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_3 => "3",
            _ => "1.1",
        }
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

    /// Query parameters; for a repeated key the last value wins (see `query_list`).
    #[getter]
    fn query<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        cached(py, &self.query, || {
            let d = PyDict::new(py);
            for (k, v) in self.query_pairs() {
                d.set_item(k, v)?;
            }
            Ok(d)
        })
    }

    #[getter]
    fn query_params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.query(py)
    }

    /// The raw (still percent-encoded) query string.
    #[getter]
    fn query_string(&self) -> &str {
        self.data.uri.query().unwrap_or("")
    }

    /// Every value of query parameter `key`, in order.
    fn query_list(&self, key: &str) -> Vec<&str> {
        self.query_pairs()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, Headers>> {
        cached(py, &self.headers, || {
            Bound::new(
                py,
                Headers {
                    map: self.data.headers.clone(),
                },
            )
        })
    }

    /// Cookies from every `Cookie` header (first value of a repeated name wins).
    #[getter]
    fn cookies<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        cached(py, &self.cookies, || {
            let d = PyDict::new(py);
            let values = self
                .data
                .headers
                .get_all("cookie")
                .into_iter()
                .map(HeaderValue::as_bytes);
            for (k, v) in parse::parse_cookies(values) {
                d.set_item(k, v)?;
            }
            Ok(d)
        })
    }

    /// A dict for guards, middleware and handlers to share (the same dict on every access).
    /// It starts with what the data plane's layers found out: `route` (the matched
    /// template), `client_ip` (behind trusted proxies, the original client) and `scheme`.
    #[getter(context)]
    fn context_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        cached(py, &self.context, || {
            let d = PyDict::new(py);
            if let Some(route) = &self.data.route {
                d.set_item("route", &**route)?;
            }
            if let Some(ip) = self.client_ip_addr() {
                d.set_item("client_ip", ip.to_string())?;
            }
            d.set_item("scheme", self.scheme_str())?;
            if let Some(subject) = &self.data.client_cert {
                d.set_item("client_cert", &**subject)?;
            }
            if let Some(token) = &self.data.csrf_token {
                d.set_item("csrf_token", &**token)?;
            }
            if let Some(user) = &self.data.identity {
                let bytes = serde_json::to_vec(&**user).unwrap_or_else(|_| b"null".to_vec());
                d.set_item("user", crate::json::read::parse(py, &bytes)?)?;
            }
            Ok(d)
        })
    }

    /// `(user, password, realm)` of Basic credentials the data plane left to the Python
    /// `verify` callable (`enable_basic_auth(verify=...)`), else `None`.
    fn _pending_basic(&self) -> Option<(String, String, String)> {
        self.data
            .pending_basic
            .as_ref()
            .map(|p| (p.user.clone(), p.password.clone(), p.realm.to_string()))
    }

    #[pyo3(signature = (key, default=None))]
    fn get_context<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        or_default(py, self.context_dict(py)?.get_item(key)?, default)
    }

    fn set_context(&self, py: Python<'_>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.context_dict(py)?.set_item(key, value)
    }

    #[getter]
    fn scheme(&self) -> &'static str {
        self.scheme_str()
    }

    /// `scheme://host/path?query`, with the path and query as received (percent-encoded).
    #[getter]
    fn url(&self) -> String {
        let pq = self.data.uri.path_and_query().map_or("/", |p| p.as_str());
        // Behind a proxy that stripped the root path, the public URL still has it.
        let root = match self.data.root_path.as_deref() {
            Some(r) if !pq.starts_with(r) => r,
            _ => "",
        };
        format!("{}://{}{}{}", self.scheme_str(), self.host_string(), root, pq)
    }

    /// The root path the app is mounted under (`--root-path`), or `""`.
    #[getter]
    fn root_path(&self) -> &str {
        self.data.root_path.as_deref().unwrap_or("")
    }

    /// The `Content-Length` header as an int; None when absent or invalid.
    #[getter]
    fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.trim().parse().ok())
    }

    /// The socket peer as `Address(host, port)`, None when unknown.
    #[getter]
    fn client<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(peer) = self.data.peer else {
            return Ok(None);
        };
        let host = parse::canonical_ip(peer.ip()).to_string();
        Ok(Some(address_type(py)?.call1((host, peer.port()))?))
    }

    fn body<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        cached(py, &self.body, || Ok(PyBytes::new(py, self.raw_body()?)))
    }

    /// The body as text, decoded with the `Content-Type` charset (UTF-8 by default);
    /// undecodable bytes become U+FFFD.
    fn text(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let charset = self
            .header("content-type")
            .and_then(|c| parse::content_type_param(&c, "charset"));
        if let Some(cs) = charset.filter(|cs| !cs.eq_ignore_ascii_case("utf-8") && !cs.eq_ignore_ascii_case("utf8")) {
            if let Ok(s) = self.body(py)?.call_method1("decode", (cs, "replace")) {
                return Ok(s.unbind());
            }
        }
        Ok(PyString::new(py, &String::from_utf8_lossy(self.raw_body()?))
            .into_any()
            .unbind())
    }

    /// The body parsed as JSON (once; the same object on every call). Malformed JSON raises
    /// `JsonDecodeError`, which handlers turn into a 400 naming the line and column.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        cached(py, &self.json, || crate::json::parse(py, self.raw_body()?))
    }

    /// Form fields (urlencoded or multipart text parts) as a dict; `{}` for other bodies.
    fn form<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let data = self.form_data(py)?;
        cached(py, &self.form_dict, || {
            let d = PyDict::new(py);
            for (k, v) in &data.fields {
                d.set_item(k, v)?;
            }
            Ok(d)
        })
    }

    /// Every value of form field `key`.
    fn form_list(&self, py: Python<'_>, key: &str) -> PyResult<Vec<String>> {
        Ok(self
            .form_data(py)?
            .fields
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect())
    }

    /// Multipart file parts as a dict of field name → `UploadedFile` (last wins).
    fn files<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let data = self.form_data(py)?;
        cached(py, &self.files_dict, || {
            let d = PyDict::new(py);
            for (k, f) in &data.files {
                d.set_item(k, f.bind(py))?;
            }
            Ok(d)
        })
    }

    /// Every file uploaded under field `key`.
    fn files_list(&self, py: Python<'_>, key: &str) -> PyResult<Vec<Py<UploadedFile>>> {
        Ok(self
            .form_data(py)?
            .files
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, f)| f.clone_ref(py))
            .collect())
    }

    /// The `Content-Type` header, None when absent.
    fn content_type(&self) -> Option<String> {
        self.header("content-type").map(Cow::into_owned)
    }

    /// `application/json` or any `application/*+json`.
    fn is_json(&self) -> bool {
        parse::is_json_media(&self.media_type())
    }

    fn is_form(&self) -> bool {
        self.media_type() == "application/x-www-form-urlencoded"
    }

    fn is_multipart(&self) -> bool {
        self.media_type().starts_with("multipart/")
    }

    #[pyo3(signature = (key, default=None))]
    fn get_query_param<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        or_default(py, self.query(py)?.get_item(key)?, default)
    }

    /// The query parameter as an int; `default` when absent or not an integer.
    #[pyo3(signature = (key, default=None))]
    fn get_query_int<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let v = self.query(py)?.get_item(key)?;
        let v = v.and_then(|v| v.extract::<String>().ok()).and_then(|s| parse_int(&s));
        or_default(py, v, default)
    }

    /// The query parameter as a finite float; `default` when absent or not a number.
    #[pyo3(signature = (key, default=None))]
    fn get_query_float<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let v = self.query(py)?.get_item(key)?;
        let v = v.and_then(|v| v.extract::<String>().ok()).and_then(|s| parse_float(&s));
        or_default(py, v, default)
    }

    /// true/1/yes/on → True, false/0/no/off → False (any case); else `default`.
    #[pyo3(signature = (key, default=None))]
    fn get_query_bool<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let v = self.query(py)?.get_item(key)?;
        let v = v
            .and_then(|v| v.extract::<String>().ok())
            .and_then(|s| parse::parse_bool(&s));
        or_default(py, v, default)
    }

    /// The first value of header `key` (case-insensitive).
    #[pyo3(signature = (key, default=None))]
    fn get_header<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        or_default(py, self.header(key), default)
    }

    #[pyo3(signature = (key, default=None))]
    fn get_param<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        or_default(py, self.params(py)?.get_item(key)?, default)
    }

    #[pyo3(signature = (key, default=None))]
    fn get_param_int<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let v = self.params(py)?.get_item(key)?;
        let v = v.and_then(|v| v.extract::<String>().ok()).and_then(|s| parse_int(&s));
        or_default(py, v, default)
    }

    /// The client's IP: the socket peer, or — only when the peer is a trusted proxy — the
    /// rightmost untrusted address of `X-Forwarded-For`, else of `Forwarded: for=`, else
    /// `X-Real-IP`. None when the peer is unknown (hand-built requests).
    fn client_ip(&self) -> Option<String> {
        self.client_ip_addr().map(|ip| ip.to_string())
    }

    fn user_agent(&self) -> Option<String> {
        self.header("user-agent").map(Cow::into_owned)
    }

    /// Whether the `Accept` header admits media type `ct` (no header admits everything).
    fn accepts(&self, ct: &str) -> bool {
        let values: Vec<_> = self.header_values("accept").collect();
        parse::accepts(values.iter().map(|c| c.as_ref()), ct)
    }

    fn is_xhr(&self) -> bool {
        self.header("x-requested-with")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("XMLHttpRequest"))
    }

    fn is_secure(&self) -> bool {
        self.scheme_str() == "https"
    }

    /// `Host` (or the HTTP/2 authority), with the port when one was sent.
    fn host(&self) -> String {
        self.host_string()
    }

    /// The request-id layer's id when it is on; else `X-Request-ID` when sane, else a
    /// UUID4 generated once for this request.
    fn request_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        cached(py, &self.request_id, || {
            if let Some(id) = &self.data.request_id {
                return Ok(PyString::new(py, id));
            }
            if let Some(id) = self.header("x-request-id") {
                if parse::sane_request_id(&id) {
                    return Ok(PyString::new(py, &id));
                }
            }
            py.import("uuid")?.call_method0("uuid4")?.str()
        })
    }

    /// This request's CSP nonce (`enable_security_headers` with a CSP using `"nonce"`),
    /// else `None`.
    fn csp_nonce(&self) -> Option<&str> {
        self.data.csp_nonce.as_deref()
    }

    fn __repr__(&self) -> String {
        format!("<Request {} {}>", self.data.method, self.data.uri)
    }
}
