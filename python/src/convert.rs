//! Handler results → HTTP responses.
//!
//! Fast paths first (dict, list, str, bytes, scalars, tuples), then `Response`,
//! awaitables (handed to the event loop), iterators (streamed), and finally the
//! JSON encoder for everything else (dataclasses, pydantic models, ...).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use cello_server::problem::problem;
use cello_server::ResponseBody;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, Response, StatusCode};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pyo3::{ffi, intern};
use tokio::sync::oneshot;

use crate::json;
use crate::request::PyRequest;
use crate::runtime::{CancelSlot, Ctx, Responder};

const JSON: &str = "application/json";
const OCTET: &str = "application/octet-stream";
const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// The same as header values, validated when compiling: `HeaderValue::from_static` called
/// at run time checks every byte again (≈ 280 instructions per response for `TEXT`).
const JSON_VALUE: HeaderValue = HeaderValue::from_static(JSON);
const OCTET_VALUE: HeaderValue = HeaderValue::from_static(OCTET);
const TEXT_VALUE: HeaderValue = HeaderValue::from_static(TEXT);
const HTML_VALUE: HeaderValue = HeaderValue::from_static(HTML);

/// What the Python thread sends back to the connection task.
pub enum Reply {
    /// A finished response.
    Ready(Response<ResponseBody>),
    /// A file to stream from disk (opened on the I/O thread, never read whole).
    File {
        path: PathBuf,
        content_type: Option<String>,
        filename: Option<String>,
        /// `Some(range header)` for ranged responses.
        range: Option<Option<String>>,
        status: StatusCode,
        headers: HeaderMap,
    },
}

impl Reply {
    /// Produce the response (opening the file for `File`).
    pub async fn into_response(self) -> Response<ResponseBody> {
        match self {
            Self::Ready(r) => r,
            Self::File {
                path,
                content_type,
                filename,
                range,
                status,
                headers,
            } => {
                let mut r = cello_server::files::file_response(
                    &path,
                    content_type.as_deref(),
                    filename.as_deref(),
                    range.as_ref().map(Option::as_deref),
                )
                .await;
                if r.status() == StatusCode::OK && status != StatusCode::OK {
                    *r.status_mut() = status;
                }
                if r.status().is_success() {
                    for (k, v) in &headers {
                        // The file response framed itself; the handler's framing headers go.
                        if !is_framing(k) && k != CONTENT_LENGTH {
                            r.headers_mut().append(k, v.clone());
                        }
                    }
                }
                r
            }
        }
    }
}

/// Hop-by-hop headers that describe the connection or the message framing: the
/// data plane (hyper) writes them, a handler cannot (RFC 9110 §7.6.1, RFC 9113 §8.2.2).
fn is_framing(name: &HeaderName) -> bool {
    name == TRANSFER_ENCODING
        || name == CONNECTION
        || name == UPGRADE
        || name == TE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Make a handler's headers agree with the body the data plane will send: drop
/// framing headers (keeping only a `Connection: close` request, which hyper honours
/// by closing after the response), and replace a `Content-Length` that contradicts
/// a known body. A streamed body is always sent chunked (DATA frames on HTTP/2): a
/// handler's length for it could not be checked before the first byte goes out.
/// Without this, `Content-Length: 2` over an 8-byte body desyncs a keep-alive
/// connection: the client reads the 6 extra bytes as the next response.
fn own_framing(resp: &mut Response<ResponseBody>, head: bool) {
    let known = match resp.body() {
        ResponseBody::Empty => Some(0),
        ResponseBody::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
        ResponseBody::Channel(_) | ResponseBody::Boxed(_) => None,
    };
    let status = resp.status();
    let h = resp.headers_mut();
    // The hot path: no framing header at all (one pass over the few names).
    if !h.keys().any(|k| k == CONTENT_LENGTH || is_framing(k)) {
        return;
    }
    let close = h.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    });
    let mut dropped = Vec::new();
    for name in [TRANSFER_ENCODING, CONNECTION, UPGRADE, TE] {
        if h.remove(&name).is_some() {
            dropped.push(name);
        }
    }
    for name in ["keep-alive", "proxy-connection"] {
        if h.remove(name).is_some() {
            dropped.push(HeaderName::from_static(name));
        }
    }
    if close {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let lengths: Vec<Option<u64>> = h
        .get_all(CONTENT_LENGTH)
        .iter()
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse().ok()))
        .collect();
    if !lengths.is_empty() {
        let claimed = match lengths.as_slice() {
            [one] => *one,
            _ => None,
        };
        let keep = match known {
            // HEAD answers carry the length of the body a GET would get, and no body.
            Some(0) if head => claimed.is_some(),
            Some(n) => claimed == Some(n) && status != StatusCode::NO_CONTENT && !status.is_informational(),
            None => false,
        };
        if !keep {
            h.remove(CONTENT_LENGTH);
            if let Some(n) = known.filter(|_| status != StatusCode::NO_CONTENT && !status.is_informational()) {
                h.insert(CONTENT_LENGTH, HeaderValue::from(n));
            }
            dropped.push(CONTENT_LENGTH);
        }
    }
    if !dropped.is_empty() {
        let names: Vec<&str> = dropped.iter().map(HeaderName::as_str).collect();
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(headers = ?names, "framing headers set by a handler were replaced (the server frames responses); further cases are logged at debug level");
        } else {
            tracing::debug!(headers = ?names, "framing headers set by a handler were replaced");
        }
    }
}

static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn is_head(request: &Bound<'_, PyRequest>) -> bool {
    request.get().data.method == Method::HEAD
}

fn with_body(status: StatusCode, content_type: HeaderValue, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, content_type);
    r
}

enum Built {
    Ready(Response<ResponseBody>),
    File(Reply),
    Stream {
        status: StatusCode,
        headers: HeaderMap,
        iterable: Py<PyAny>,
    },
    Await,
}

/// Convert `result` and send it; awaitables go to the loop, iterators are pumped.
pub fn respond(
    py: Python<'_>,
    ctx: &Arc<Ctx>,
    result: Bound<'_, PyAny>,
    request: Bound<'_, PyRequest>,
    tx: oneshot::Sender<Reply>,
    slot: Arc<CancelSlot>,
) {
    // Native coroutines: on Python 3.12+ they become eager Tasks, whose first step
    // runs right here inside the Task (so `current_task()`, anyio and timeouts
    // work); one that finishes without suspending answers with no loop round trip.
    if result.get_type().is(ctx.coroutine_type.bind(py)) {
        if let Some(kwargs) = &ctx.eager_kwargs {
            let task = match ctx.task_type.bind(py).call((result,), Some(kwargs.bind(py))) {
                Ok(t) => t,
                Err(e) => return fail(py, ctx, e, &request, tx),
            };
            if task.call_method0("done").and_then(|d| d.is_truthy()).unwrap_or(false) {
                ctx.stats.eager.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match task.call_method0("result") {
                    Ok(v) => respond(py, ctx, v, request, tx, slot),
                    Err(e) => fail(py, ctx, e, &request, tx),
                }
                return;
            }
            ctx.stats.tasks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let responder = Responder::new(ctx.clone(), tx, request.unbind(), slot.clone());
            match ctx.hooks.call_method1(py, "track", (task, responder)) {
                Ok(task) => slot.set(task),
                Err(e) => e.print(py),
            }
            return;
        }
    }
    match build(ctx, &result) {
        Ok(Built::Ready(mut resp)) => {
            own_framing(&mut resp, is_head(&request));
            let _ = tx.send(Reply::Ready(resp));
        }
        Ok(Built::File(reply)) => {
            let _ = tx.send(reply);
        }
        Ok(Built::Await) => {
            ctx.stats.tasks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let responder = Responder::new(ctx.clone(), tx, request.unbind(), slot.clone());
            match ctx.hooks.call_method1(py, "spawn", (result, responder)) {
                Ok(task) => slot.set(task),
                Err(e) => e.print(py),
            }
        }
        Ok(Built::Stream {
            status,
            mut headers,
            iterable,
        }) => {
            let (sink, body) = crate::sink::channel(ctx.clone());
            let mut resp = Response::new(body);
            *resp.status_mut() = status;
            headers.entry(CONTENT_TYPE).or_insert(TEXT_VALUE);
            *resp.headers_mut() = headers;
            own_framing(&mut resp, is_head(&request));
            let _ = tx.send(Reply::Ready(resp));
            if let Err(e) = ctx.hooks.call_method1(py, "pump", (iterable, sink)) {
                e.print(py);
            }
        }
        Err(err) => fail(py, ctx, err, &request, tx),
    }
}

/// [`respond`] for a sync handler run on an I/O thread: what needs the loop thread (an
/// awaitable to run, an iterator to pump) comes back as `Err(result)`, untouched.
pub fn respond_inline<'py>(
    py: Python<'py>,
    ctx: &Arc<Ctx>,
    result: Bound<'py, PyAny>,
    request: &Bound<'py, PyRequest>,
) -> Result<Reply, Bound<'py, PyAny>> {
    if result.get_type().is(ctx.coroutine_type.bind(py)) {
        return Err(result);
    }
    match build(ctx, &result) {
        Ok(Built::Ready(mut resp)) => {
            own_framing(&mut resp, is_head(request));
            Ok(Reply::Ready(resp))
        }
        Ok(Built::File(reply)) => Ok(reply),
        Ok(Built::Await | Built::Stream { .. }) => Err(result),
        Err(err) => Ok(fail_inline(py, ctx, err, request)),
    }
}

/// [`fail`] returning the reply (error mapping is sync Python: it runs on any thread).
pub fn fail_inline(py: Python<'_>, ctx: &Arc<Ctx>, err: PyErr, request: &Bound<'_, PyRequest>) -> Reply {
    let (tx, mut rx) = oneshot::channel();
    fail(py, ctx, err, request, tx);
    rx.try_recv()
        .unwrap_or_else(|_| Reply::Ready(problem(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")))
}

fn status_from(code: u16) -> PyResult<StatusCode> {
    StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.as_u16() >= 100)
        .ok_or_else(|| PyValueError::new_err(format!("{code} is not a valid HTTP status code")))
}

/// A header value: the content types `Response` sets itself need no copy.
fn header_value(name: &str, v: &str) -> PyResult<HeaderValue> {
    Ok(match v {
        JSON => JSON_VALUE,
        TEXT => TEXT_VALUE,
        OCTET => OCTET_VALUE,
        HTML => HTML_VALUE,
        _ => HeaderValue::from_str(v).map_err(|_| PyValueError::new_err(format!("invalid value for header {name}")))?,
    })
}

/// `Response._headers` as the hot path holds it: a list of `(str, str)` tuples, read
/// without copying the strings first. `None` when it is anything else.
fn headers_from_pairs(obj: &Bound<'_, PyAny>) -> Option<PyResult<HeaderMap>> {
    let list = obj.cast::<PyList>().ok()?;
    let mut map = HeaderMap::with_capacity(list.len());
    for item in list.iter() {
        let pair = item.cast::<PyTuple>().ok().filter(|t| t.len() == 2)?;
        let (k, v) = (pair.get_item(0).ok()?, pair.get_item(1).ok()?);
        let (k, v) = (k.cast::<PyString>().ok()?, v.cast::<PyString>().ok()?);
        let (k, v) = (k.to_str().ok()?, v.to_str().ok()?);
        let name = match HeaderName::from_bytes(k.as_bytes()) {
            Ok(n) => n,
            Err(_) => return Some(Err(PyValueError::new_err(format!("invalid header name {k:?}")))),
        };
        match header_value(k, v) {
            Ok(value) => map.append(name, value),
            Err(e) => return Some(Err(e)),
        };
    }
    Some(Ok(map))
}

/// Parse a header list or dict from Python.
pub fn headers_from(obj: &Bound<'_, PyAny>) -> PyResult<HeaderMap> {
    if let Some(map) = headers_from_pairs(obj) {
        return map;
    }
    let mut map = HeaderMap::new();
    let pairs: Vec<(String, String)> = if let Ok(d) = obj.cast::<PyDict>() {
        d.iter()
            .map(|(k, v)| Ok((k.extract()?, v.str()?.extract()?)))
            .collect::<PyResult<_>>()?
    } else {
        obj.extract()?
    };
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("invalid header name {k:?}")))?;
        map.append(name, header_value(&k, &v)?);
    }
    Ok(map)
}

fn build(ctx: &Arc<Ctx>, result: &Bound<'_, PyAny>) -> PyResult<Built> {
    // Exact fast types first: these never need the slower protocol checks below.
    if result.is_instance_of::<PyDict>()
        || result.is_instance_of::<PyList>()
        || result.is_none()
        || result.is_instance_of::<PyBool>()
        || result.is_instance_of::<PyInt>()
        || result.is_instance_of::<PyFloat>()
        || result.is_instance_of::<PyString>()
    {
        return Ok(Built::Ready(with_body(
            StatusCode::OK,
            JSON_VALUE,
            json::to_vec(result)?,
        )));
    }
    if let Ok(b) = result.cast::<PyBytes>() {
        return Ok(Built::Ready(with_body(
            StatusCode::OK,
            OCTET_VALUE,
            Bytes::copy_from_slice(b.as_bytes()),
        )));
    }
    if let Ok(b) = result.cast::<PyByteArray>() {
        return Ok(Built::Ready(with_body(StatusCode::OK, OCTET_VALUE, b.to_vec())));
    }
    if let Ok(t) = result.cast::<PyTuple>() {
        return build_tuple(ctx, t);
    }
    if result.is_instance(ctx.response_type.bind(result.py()))? {
        if result.get_type().is(ctx.response_type.bind(result.py())) {
            if let Some(built) = build_plain_response(ctx, result)? {
                return Ok(built);
            }
        }
        return build_response(result);
    }
    if result.hasattr("__await__")? {
        return Ok(Built::Await);
    }
    if result.hasattr("__anext__")? || result.hasattr("__next__")? {
        return Ok(Built::Stream {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            iterable: result.clone().unbind(),
        });
    }
    if result.hasattr("__cello_response__")? {
        // `ProblemDetails` and other objects that know their response.
        let resp = result.call_method0("__cello_response__")?;
        if !resp.hasattr("__cello_response__")? {
            return build(ctx, &resp);
        }
    }
    Ok(Built::Ready(with_body(
        StatusCode::OK,
        JSON_VALUE,
        json::to_vec(result)?,
    )))
}

fn build_tuple(ctx: &Arc<Ctx>, t: &Bound<'_, PyTuple>) -> PyResult<Built> {
    if !(2..=3).contains(&t.len()) {
        return Err(PyTypeError::new_err(
            "a handler may return (body, status) or (body, status, headers)",
        ));
    }
    let body = t.get_item(0)?;
    if body.is_instance_of::<PyTuple>() {
        return Err(PyTypeError::new_err(
            "the body of a (body, status) tuple cannot be a tuple",
        ));
    }
    let status = status_from(t.get_item(1)?.extract::<u16>()?)?;
    let extra = if t.len() == 3 {
        headers_from(&t.get_item(2)?)?
    } else {
        HeaderMap::new()
    };
    let mut built = build(ctx, &body)?;
    match &mut built {
        Built::Ready(r) => {
            *r.status_mut() = status;
            for (k, v) in &extra {
                r.headers_mut().insert(k, v.clone());
            }
        }
        Built::File(Reply::File { status: s, headers, .. }) | Built::Stream { status: s, headers, .. } => {
            *s = status;
            headers.extend(extra);
        }
        Built::File(Reply::Ready(_)) | Built::Await => {
            return Err(PyTypeError::new_err(
                "the body of a (body, status) tuple cannot be awaitable",
            ));
        }
    }
    Ok(built)
}

/// Where a plain `Response` keeps its state, read once from the class at start-up: the
/// byte offsets of its `_kind`, `_status`, `_headers` and `_body` slots, and the
/// constructors' shared `("content-type", …)` tuples with the static value each stands
/// for. Converting a `Response.text/json/html` result is then four pointer reads and an
/// identity comparison, not four attribute lookups and a header list parsed back.
pub struct ResponseLayout {
    slots: [ffi::Py_ssize_t; 4],
    content_types: Vec<(Py<PyAny>, HeaderValue)>,
}

impl ResponseLayout {
    /// The layout of `ty` (`cello.Response`); `None` when one of the four is not a plain
    /// object slot (then every response takes the attribute path).
    // Reading a member descriptor's offset: CPython has no safe API for it.
    #[allow(unsafe_code)]
    pub fn of(ty: &Bound<'_, PyAny>) -> Option<Self> {
        let py = ty.py();
        let mut slots = [0; 4];
        for (slot, name) in slots.iter_mut().zip(["_kind", "_status", "_headers", "_body"]) {
            let desc = ty.getattr(name).ok()?;
            // SAFETY: `desc` is checked to be a member descriptor first; its `d_member` is
            // the slot's `PyMemberDef` (pyo3 types the field differently before 3.11, the
            // C layout is the same).
            unsafe {
                if ffi::PyObject_TypeCheck(desc.as_ptr(), std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type)) == 0 {
                    return None;
                }
                let member = (*desc.as_ptr().cast::<ffi::PyMemberDescrObject>())
                    .d_member
                    .cast::<ffi::PyMemberDef>();
                if (*member).type_code != ffi::Py_T_OBJECT_EX || (*member).offset <= 0 {
                    return None;
                }
                *slot = (*member).offset;
            }
        }
        let module: String = ty.getattr("__module__").ok()?.extract().ok()?;
        let shared = py.import(module.as_str()).ok()?.getattr("_CT").ok();
        let content_types = [
            (JSON, JSON_VALUE),
            (TEXT, TEXT_VALUE),
            (HTML, HTML_VALUE),
            (OCTET, OCTET_VALUE),
        ]
        .into_iter()
        .filter_map(|(ct, value)| Some((shared.as_ref()?.get_item(ct).ok()?.unbind(), value)))
        .collect();
        Some(Self { slots, content_types })
    }
}

/// A plain `Response` (kind 0: bytes or nothing) read from its slots, as `_cello_parts()`
/// would give them, without the Python call and its tuple. `None` for files and streams
/// (and for a slot never set: `_cello_parts` raises its `AttributeError`).
// The slots read at their offsets (what CPython's member descriptors do, minus the lookup).
#[allow(unsafe_code)]
fn build_plain_response(ctx: &Ctx, result: &Bound<'_, PyAny>) -> PyResult<Option<Built>> {
    let py = result.py();
    let Some(layout) = &ctx.layout else {
        return build_plain_response_slow(result);
    };
    // SAFETY: the caller checked that `result`'s type is exactly `Response`, whose
    // instances hold these object slots at these offsets (NULL when never set); the
    // references are borrowed from `result`, which outlives them.
    let [kind, status, headers, payload] = layout.slots.map(|offset| unsafe {
        let p = *result.as_ptr().cast::<u8>().offset(offset).cast::<*mut ffi::PyObject>();
        (!p.is_null()).then(|| Bound::from_borrowed_ptr(py, p))
    });
    let (Some(kind), Some(status), Some(headers), Some(payload)) = (kind, status, headers, payload) else {
        return Ok(None);
    };
    if kind.extract::<u8>()? != 0 {
        return Ok(None);
    }
    let status = if status.is_none() {
        StatusCode::OK
    } else {
        status_from(status.extract()?)?
    };
    // The constructors' one shared content-type tuple: a static value, nothing parsed.
    if let Ok(list) = headers.cast::<PyList>() {
        if list.len() == 1 {
            let item = list.get_item(0)?;
            if let Some((_, ct)) = layout.content_types.iter().find(|(t, _)| t.bind(py).is(&item)) {
                let mut map = HeaderMap::new();
                map.insert(CONTENT_TYPE, ct.clone());
                return Ok(Some(Built::Ready(bytes_response(status, map, &payload)?)));
            }
        }
    }
    let headers = headers_from(&headers)?;
    Ok(Some(Built::Ready(bytes_response(status, headers, &payload)?)))
}

/// [`build_plain_response`] through attribute lookups (no [`ResponseLayout`]).
fn build_plain_response_slow(result: &Bound<'_, PyAny>) -> PyResult<Option<Built>> {
    let py = result.py();
    if result.getattr(intern!(py, "_kind"))?.extract::<u8>()? != 0 {
        return Ok(None);
    }
    let status = result.getattr(intern!(py, "_status"))?;
    let status = if status.is_none() {
        StatusCode::OK
    } else {
        status_from(status.extract()?)?
    };
    let headers = headers_from(&result.getattr(intern!(py, "_headers"))?)?;
    let payload = result.getattr(intern!(py, "_body"))?;
    Ok(Some(Built::Ready(bytes_response(status, headers, &payload)?)))
}

/// The response of a kind-0 `Response`: its bytes (or no body).
fn bytes_response(
    status: StatusCode,
    headers: HeaderMap,
    payload: &Bound<'_, PyAny>,
) -> PyResult<Response<ResponseBody>> {
    let body = if payload.is_none() {
        Bytes::new()
    } else if let Ok(b) = payload.cast::<PyBytes>() {
        Bytes::copy_from_slice(b.as_bytes())
    } else {
        Bytes::from(payload.extract::<Vec<u8>>()?)
    };
    let mut r = Response::new(if body.is_empty() {
        ResponseBody::Empty
    } else {
        ResponseBody::full(body)
    });
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    Ok(r)
}

/// `Response._cello_parts()` → `(status, headers, kind, payload)`; kind 0 = bytes,
/// 1 = file `(path, content_type, filename, range, ranged)`, 2 = iterable.
fn build_response(result: &Bound<'_, PyAny>) -> PyResult<Built> {
    let parts = result.call_method0("_cello_parts")?;
    let (status, headers, kind, payload): (u16, Bound<'_, PyAny>, u8, Bound<'_, PyAny>) = parts.extract()?;
    let status = status_from(status)?;
    let headers = headers_from(&headers)?;
    match kind {
        0 => Ok(Built::Ready(bytes_response(status, headers, &payload)?)),
        1 => {
            let (path, content_type, filename, range, ranged): (
                PathBuf,
                Option<String>,
                Option<String>,
                Option<String>,
                bool,
            ) = payload.extract()?;
            Ok(Built::File(Reply::File {
                path,
                content_type,
                filename,
                range: ranged.then_some(range),
                status,
                headers,
            }))
        }
        2 => Ok(Built::Stream {
            status,
            headers,
            iterable: payload.unbind(),
        }),
        k => Err(PyValueError::new_err(format!("unknown response kind {k}"))),
    }
}

/// A handler raised: let Python map it (exception handlers, HTTP errors, 500 with or
/// without traceback) and send what it says.
pub fn fail(py: Python<'_>, ctx: &Arc<Ctx>, err: PyErr, request: &Bound<'_, PyRequest>, tx: oneshot::Sender<Reply>) {
    let mapped = ctx
        .hooks
        .call_method1(py, "error", (err.into_value(py), request))
        .and_then(|v| {
            let (status, headers, body): (u16, Bound<'_, PyAny>, Vec<u8>) = v.bind(py).extract()?;
            let mut r = Response::new(ResponseBody::full(body));
            *r.status_mut() = status_from(status)?;
            *r.headers_mut() = headers_from(&headers)?;
            Ok(r)
        });
    match mapped {
        Ok(mut r) => {
            own_framing(&mut r, is_head(request));
            let _ = tx.send(Reply::Ready(r));
        }
        Err(e) => fail_plain(py, &e, tx),
    }
}

/// Last resort when even error mapping failed.
pub fn fail_plain(py: Python<'_>, err: &PyErr, tx: oneshot::Sender<Reply>) {
    err.print(py);
    let _ = tx.send(Reply::Ready(problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal server error",
    )));
}
