//! The Python side of WebSocket routes: an [`Endpoint`] that runs the handler like any
//! request (so path parameters, guards and `Depends` apply to the upgrade) and answers
//! `101` as soon as the handler calls `accept()`; and `WebSocketConn`, the handler's
//! handle on the session's two bounded channels (async methods return asyncio futures,
//! `*_blocking` ones serve sync handlers running in the thread pool).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use cello_server::endpoint::ResponseFuture;
use cello_server::problem::problem;
use cello_server::websocket::{PendingHandshake, SessionEnd, WsMessage};
use cello_server::{Endpoint, RoutedRequest};
use http::StatusCode;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::executor;
use crate::runtime::{CancelOnDrop, CancelSlot, Job, QueueBound, Shared};

/// What `accept()` decided.
struct Accept {
    protocol: Option<String>,
    headers: Vec<(String, String)>,
}

/// Endpoint of every `@app.websocket` route.
pub struct WsEndpoint {
    pub shared: Arc<Shared>,
    pub event_loop: Arc<Py<PyAny>>,
    /// Until `accept()`: the handler's time limit (guards and dependencies run in it).
    pub handler_timeout: Duration,
    /// The bound on jobs waiting for the Python thread, which an upgrade's job counts
    /// against like any request (the thread leaves it for every `Job::Request`).
    pub queue: Arc<QueueBound>,
}

/// One connection, shared by the endpoint future and the Python objects.
pub struct WsConn {
    accept: Mutex<Option<oneshot::Sender<Accept>>>,
    offered: Vec<String>,
    incoming: Arc<tokio::sync::Mutex<mpsc::Receiver<WsMessage>>>,
    outgoing: mpsc::Sender<WsMessage>,
    shared: Arc<Shared>,
    event_loop: Arc<Py<PyAny>>,
    handle: Handle,
}

enum Decision {
    Accept(Accept),
    Reply(Result<crate::convert::Reply, oneshot::error::RecvError>),
}

impl Endpoint for WsEndpoint {
    fn call(&self, mut req: RoutedRequest) -> ResponseFuture {
        let Some(hs) = req.parts.extensions.remove::<PendingHandshake>().and_then(|p| p.take()) else {
            return Box::pin(std::future::ready(problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a WebSocket endpoint was called without a handshake",
            )));
        };
        if !self.queue.enter() {
            return Box::pin(std::future::ready(self.queue.busy()));
        }
        let queue = usize::try_from(hs.config().queue_size).unwrap_or(16).max(1);
        let (in_tx, in_rx) = mpsc::channel(queue);
        let (out_tx, out_rx) = mpsc::channel(queue);
        let (acc_tx, mut acc_rx) = oneshot::channel();
        let conn = Arc::new(WsConn {
            accept: Mutex::new(Some(acc_tx)),
            offered: hs.protocols().to_vec(),
            incoming: Arc::new(tokio::sync::Mutex::new(in_rx)),
            outgoing: out_tx,
            shared: self.shared.clone(),
            event_loop: self.event_loop.clone(),
            handle: Handle::current(),
        });
        req.parts.extensions.insert(conn);
        let (tx, mut rx) = oneshot::channel();
        let slot = Arc::new(CancelSlot::default());
        *crate::runtime::lock(&slot.request) = Some(req);
        self.shared.push_batched(Job::Request(tx, slot.clone()));
        let mut guard = CancelOnDrop::new(slot.clone(), self.shared.clone());
        let (shared, limit) = (self.shared.clone(), self.handler_timeout);
        Box::pin(async move {
            let decided = tokio::time::timeout(limit, async {
                tokio::select! {
                    biased;
                    a = &mut acc_rx => match a {
                        Ok(a) => Decision::Accept(a),
                        Err(_) => Decision::Reply((&mut rx).await),
                    },
                    r = &mut rx => Decision::Reply(r),
                }
            })
            .await;
            match decided {
                Ok(Decision::Accept(a)) => {
                    // From here the handler lives as long as the connection, not the response.
                    guard.disarm();
                    let (resp, session) = hs.accept(a.protocol.as_deref(), &a.headers);
                    tokio::spawn(async move {
                        if session.run(in_tx, out_rx).await == SessionEnd::Abnormal {
                            // The peer vanished: the handler is cancelled, not left waiting.
                            shared.push(Job::Cancel(slot));
                        }
                    });
                    resp
                }
                Ok(Decision::Reply(Ok(reply))) => {
                    guard.disarm();
                    reply.into_response().await
                }
                Ok(Decision::Reply(Err(_))) => {
                    guard.disarm();
                    problem(StatusCode::INTERNAL_SERVER_ERROR, "the handler produced no response")
                }
                Err(_) => problem(StatusCode::GATEWAY_TIMEOUT, "the handler did not accept in time"),
            }
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `("text", str, None)`, `("binary", bytes, None)`, `("close", reason, code)`; `None` when
/// the session is over.
fn message_to_py(py: Python<'_>, msg: Option<WsMessage>) -> PyResult<Py<PyAny>> {
    let Some(msg) = msg else { return Ok(py.None()) };
    let t = match msg {
        WsMessage::Text(s) => PyTuple::new(
            py,
            [
                "text".into_pyobject(py)?.into_any(),
                s.into_pyobject(py)?.into_any(),
                py.None().into_bound(py),
            ],
        )?,
        WsMessage::Binary(b) => PyTuple::new(
            py,
            [
                "binary".into_pyobject(py)?.into_any(),
                PyBytes::new(py, &b).into_any(),
                py.None().into_bound(py),
            ],
        )?,
        WsMessage::Close(code, reason) => PyTuple::new(
            py,
            [
                "close".into_pyobject(py)?.into_any(),
                reason.into_pyobject(py)?.into_any(),
                code.into_pyobject(py)?.into_any(),
            ],
        )?,
    };
    Ok(t.into_any().unbind())
}

fn message_from_py(kind: &str, data: &Bound<'_, PyAny>, code: Option<u16>) -> PyResult<WsMessage> {
    Ok(match kind {
        "text" => WsMessage::Text(data.extract::<String>()?),
        "binary" => {
            let b: Vec<u8> = data
                .extract()
                .map_err(|_| PyTypeError::new_err("binary data must be bytes-like"))?;
            WsMessage::Binary(Bytes::from(b))
        }
        "close" => WsMessage::Close(code, data.extract::<String>().unwrap_or_default()),
        other => return Err(PyValueError::new_err(format!("unknown message kind {other:?}"))),
    })
}

fn gone() -> PyErr {
    PyConnectionError::new_err("the WebSocket connection is closed")
}

/// The handler's end of a WebSocket connection (wrapped by `cello.WebSocket`).
#[pyclass(frozen, module = "cello._cello")]
pub struct WebSocketConn {
    inner: Arc<WsConn>,
}

impl WebSocketConn {
    pub fn new(inner: Arc<WsConn>) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl WebSocketConn {
    /// The subprotocols the client offered, in its order of preference.
    #[getter]
    fn subprotocols(&self) -> Vec<String> {
        self.inner.offered.clone()
    }

    /// Whether `accept()` was called (or the handshake can no longer be accepted).
    #[getter]
    fn decided(&self) -> bool {
        lock(&self.inner.accept).is_none()
    }

    /// Answer the handshake with `101`; `subprotocol` must be one the client offered.
    #[pyo3(signature = (subprotocol = None, headers = Vec::new()))]
    fn accept(&self, subprotocol: Option<String>, headers: Vec<(String, String)>) -> PyResult<()> {
        if let Some(p) = &subprotocol {
            if !self.inner.offered.contains(p) {
                return Err(PyValueError::new_err(format!(
                    "subprotocol {p:?} was not offered by the client (offered: {:?})",
                    self.inner.offered
                )));
            }
        }
        let tx = lock(&self.inner.accept)
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the WebSocket was already accepted"))?;
        tx.send(Accept {
            protocol: subprotocol,
            headers,
        })
        .map_err(|_| gone())
    }

    /// The next message as an asyncio future (see `message_to_py`).
    fn receive(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let rx = self.inner.incoming.clone();
        let c = &self.inner;
        executor::future_into_py(
            py,
            &c.shared,
            &c.handle,
            &c.event_loop,
            async move { Ok(rx.lock().await.recv().await) },
            message_to_py,
        )
    }

    /// The next message, blocking this (non-loop) thread without the GIL.
    fn receive_blocking(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let rx = self.inner.incoming.clone();
        let msg = py.detach(move || rx.blocking_lock().blocking_recv());
        message_to_py(py, msg)
    }

    /// Queue a message; the future resolves once there is room (back-pressure).
    #[pyo3(signature = (kind, data, code = None))]
    fn send(&self, py: Python<'_>, kind: &str, data: &Bound<'_, PyAny>, code: Option<u16>) -> PyResult<Py<PyAny>> {
        let msg = message_from_py(kind, data, code)?;
        let tx = self.inner.outgoing.clone();
        let c = &self.inner;
        executor::future_into_py(
            py,
            &c.shared,
            &c.handle,
            &c.event_loop,
            async move { tx.send(msg).await.map_err(|_| gone()) },
            |py, ()| Ok(py.None()),
        )
    }

    /// Queue a message, blocking this (non-loop) thread while the queue is full.
    #[pyo3(signature = (kind, data, code = None))]
    fn send_blocking(&self, py: Python<'_>, kind: &str, data: &Bound<'_, PyAny>, code: Option<u16>) -> PyResult<()> {
        let msg = message_from_py(kind, data, code)?;
        let tx = self.inner.outgoing.clone();
        py.detach(move || tx.blocking_send(msg)).map_err(|_| gone())
    }
}
