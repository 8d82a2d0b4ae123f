//! A streaming response body fed from Python, with back-pressure: `send` never
//! blocks the event loop; when the channel is full the producer awaits `wait()`.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use pyo3::exceptions::{PyConnectionResetError, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};
use tokio::sync::mpsc;

use crate::runtime::Ctx;

/// The write end of a streaming response.
#[pyclass(frozen, module = "cello._cello")]
pub struct BodySink {
    tx: Mutex<Option<mpsc::Sender<io::Result<Bytes>>>>,
    ctx: Arc<Ctx>,
    /// Cancelled when the body ends on our side, so `gone()` watchers let go of their sender.
    done: tokio_util::sync::CancellationToken,
}

impl Drop for BodySink {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

impl BodySink {
    pub(crate) fn new(tx: mpsc::Sender<io::Result<Bytes>>, ctx: Arc<Ctx>) -> Self {
        Self {
            tx: Mutex::new(Some(tx)),
            ctx,
            done: tokio_util::sync::CancellationToken::new(),
        }
    }

    fn sender(&self) -> Option<mpsc::Sender<io::Result<Bytes>>> {
        self.tx.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn chunk_bytes(chunk: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = chunk.cast::<PyBytes>() {
        Ok(Bytes::copy_from_slice(b.as_bytes()))
    } else if let Ok(s) = chunk.cast::<PyString>() {
        Ok(Bytes::copy_from_slice(s.to_str()?.as_bytes()))
    } else if let Ok(b) = chunk.cast::<PyByteArray>() {
        Ok(Bytes::from(b.to_vec()))
    } else if let Ok(v) = chunk.extract::<Vec<u8>>() {
        Ok(Bytes::from(v))
    } else {
        Err(PyTypeError::new_err(format!(
            "a streamed chunk must be str or bytes, not {}",
            chunk.get_type().name()?
        )))
    }
}

#[pymethods]
impl BodySink {
    /// Queue a chunk. `True`: taken. `False`: the client is slower, await `wait()` and
    /// send again. Raises `ConnectionResetError` when the client has gone.
    fn send(&self, chunk: &Bound<'_, PyAny>) -> PyResult<bool> {
        let data = chunk_bytes(chunk)?;
        if data.is_empty() {
            return Ok(true);
        }
        let Some(tx) = self.sender() else {
            return Err(PyConnectionResetError::new_err("the stream is closed"));
        };
        match tx.try_send(Ok(data)) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(PyConnectionResetError::new_err("the client closed the connection"))
            }
        }
    }

    /// An asyncio future that completes when there is room for another chunk.
    fn wait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let event_loop = self.ctx.event_loop.bind(py);
        let fut = event_loop.call_method0("create_future")?.unbind();
        let Some(tx) = self.sender() else {
            return Err(PyConnectionResetError::new_err("the stream is closed"));
        };
        let handle = self
            .ctx
            .io
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("the I/O runtime is not running"))?;
        let (ctx, fut2) = (self.ctx.clone(), fut.clone_ref(py));
        handle.spawn(async move {
            let open = tx.reserve().await.is_ok(); // the permit is released at once
            Python::attach(|py| {
                let _ = ctx.hooks.call_method1(py, "resolve", (fut2, open));
            });
        });
        Ok(fut)
    }

    /// An asyncio future that completes (with `None`) when the client has gone: the
    /// response body was dropped. Lets the pump cancel a producer that is waiting for its
    /// next item, instead of noticing only at the next send.
    fn gone(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let event_loop = self.ctx.event_loop.bind(py);
        let fut = event_loop.call_method0("create_future")?.unbind();
        let Some(tx) = self.sender() else {
            return Err(PyConnectionResetError::new_err("the stream is closed"));
        };
        let handle = self
            .ctx
            .io
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("the I/O runtime is not running"))?;
        let (ctx, fut2, done) = (self.ctx.clone(), fut.clone_ref(py), self.done.clone());
        handle.spawn(async move {
            tokio::select! {
                () = tx.closed() => {
                    Python::attach(|py| {
                        let _ = ctx.hooks.call_method1(py, "resolve", (fut2, py.None()));
                    });
                }
                // The body ended normally: drop our sender so the response can finish.
                () = done.cancelled() => {}
            }
        });
        Ok(fut)
    }

    /// End the body normally.
    fn close(&self) {
        self.done.cancel();
        self.tx.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// End the body with an error: the client sees a truncated response.
    fn abort(&self) {
        self.done.cancel();
        if let Some(tx) = self.tx.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = tx.try_send(Err(io::Error::other("the response stream failed")));
        }
    }
}
