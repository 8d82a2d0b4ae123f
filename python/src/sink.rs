//! A streaming response body fed from Python, with back-pressure: `send` never
//! blocks the event loop; when the channel is full the producer awaits `wait()`.
//!
//! How the body ends is not a message on the data channel (which may be full when a
//! generator fails, so an error sent there could be lost): the sink holds a oneshot
//! that only `close()` completes. The body checks it before each chunk and at the
//! end of the data; a sink dropped or aborted without `close()` ends the response
//! with an error, so the client never sees a clean end of a failed stream (HTTP/1.1:
//! no terminating chunk, the connection is closed; HTTP/2: `RST_STREAM`).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use cello_server::ResponseBody;
use http_body::{Body, Frame, SizeHint};
use pyo3::exceptions::{PyConnectionResetError, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};
use tokio::sync::{mpsc, oneshot};

use crate::runtime::Ctx;

/// Chunks a stream may have queued ahead of a slow client.
const QUEUED_CHUNKS: usize = 16;

/// The write end of a streaming response.
#[pyclass(frozen, module = "cello._cello")]
pub struct BodySink {
    /// The data channel and the completion signal; both taken on close/abort.
    ends: Mutex<Option<(mpsc::Sender<Bytes>, oneshot::Sender<()>)>>,
    ctx: Arc<Ctx>,
    /// Cancelled when the body ends on our side, so `gone()` watchers let go of their sender.
    done: tokio_util::sync::CancellationToken,
}

impl Drop for BodySink {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// The read end: the response body.
pub struct SinkBody {
    rx: mpsc::Receiver<Bytes>,
    /// `None` once the outcome is known.
    end: Option<oneshot::Receiver<()>>,
    /// `close()` was called: the data ends normally.
    complete: bool,
}

/// A sink and the response body it feeds.
pub(crate) fn channel(ctx: Arc<Ctx>) -> (BodySink, ResponseBody) {
    let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
    let (end_tx, end_rx) = oneshot::channel();
    let sink = BodySink {
        ends: Mutex::new(Some((tx, end_tx))),
        ctx,
        done: tokio_util::sync::CancellationToken::new(),
    };
    let body = SinkBody {
        rx,
        end: Some(end_rx),
        complete: false,
    };
    (sink, ResponseBody::Boxed(http_body_util::BodyExt::boxed(body)))
}

fn aborted() -> io::Error {
    io::Error::other("the response stream failed")
}

impl SinkBody {
    /// `Some(err)` when the stream was aborted; records a normal close.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let end = self.end.as_mut()?;
        match Pin::new(end).poll(cx) {
            Poll::Ready(Ok(())) => {
                self.end = None;
                self.complete = true;
                None
            }
            Poll::Ready(Err(_)) => {
                self.end = None;
                Some(aborted())
            }
            Poll::Pending => None,
        }
    }
}

impl Body for SinkBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        // Queued data goes out first (the client gets what was produced); the outcome is
        // looked at whenever the queue is empty, so an abort is never missed.
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(None) => {
                // Every sender is gone, so the sink decided; `close()` completes the
                // signal before it drops the sender.
                if !this.complete {
                    if let Some(err) = this.poll_end(cx) {
                        return Poll::Ready(Some(Err(err)));
                    }
                    if !this.complete {
                        this.end = None;
                        return Poll::Ready(Some(Err(aborted())));
                    }
                }
                Poll::Ready(None)
            }
            Poll::Pending => match this.poll_end(cx) {
                Some(err) => Poll::Ready(Some(Err(err))),
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl BodySink {
    fn sender(&self) -> Option<mpsc::Sender<Bytes>> {
        self.ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(tx, _)| tx.clone())
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
        match tx.try_send(data) {
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
                // The body ended on our side: drop our sender so the response can finish.
                () = done.cancelled() => {}
            }
        });
        Ok(fut)
    }

    /// End the body normally.
    fn close(&self) {
        self.done.cancel();
        if let Some((tx, end)) = self.ends.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = end.send(()); // before the sender drops: see `SinkBody::poll_frame`
            drop(tx);
        }
    }

    /// End the body with an error: the client sees a truncated response. Cannot be
    /// lost: dropping the completion signal unsent is the abort.
    fn abort(&self) {
        self.done.cancel();
        drop(self.ends.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}
