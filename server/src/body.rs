//! Response bodies: one enum so the common cases (empty, one buffer) need no box.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Boxed body for anything else (proxied bodies, files).
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, io::Error>;

/// The body of every response the data plane sends.
#[derive(Default)]
pub enum ResponseBody {
    /// No body.
    #[default]
    Empty,
    /// One buffer, sent with `Content-Length`.
    Full(Option<Bytes>),
    /// Chunks produced elsewhere (a Python generator); ends when the sender drops,
    /// and an `Err` aborts the response (the client sees a truncated body).
    Channel(mpsc::Receiver<io::Result<Bytes>>),
    /// Any other body (files, proxied upstream bodies).
    Boxed(BoxBody),
}

impl ResponseBody {
    /// A body of one buffer.
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self::Full(Some(b.into()))
    }
}

impl From<Bytes> for ResponseBody {
    fn from(b: Bytes) -> Self {
        Self::full(b)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            Self::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
            Self::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Self::Channel(_) => false,
            Self::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Channel(_) => SizeHint::default(),
            Self::Boxed(b) => b.size_hint(),
        }
    }
}

/// Boxed error of a request body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request the stack sees: hyper's for sockets, one buffer for
/// in-process requests (the TestClient, `oneshot` tests).
pub enum RequestBody {
    /// Straight from the connection.
    Incoming(hyper::body::Incoming),
    /// Straight from an HTTP/1 connection, telling it whether it was read to the end.
    Watched(WatchedIncoming),
    /// Already in memory.
    Full(Option<Bytes>),
    /// Chunks handed over by a task that reads another transport (HTTP/3): bounded, so the
    /// reader waits for the handler, and QUIC flow control holds the client back.
    Channel(mpsc::Receiver<Result<Bytes, BoxError>>),
}

impl RequestBody {
    /// A body of one buffer.
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self::Full(Some(b.into()))
    }
    /// No body.
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl From<hyper::body::Incoming> for RequestBody {
    fn from(b: hyper::body::Incoming) -> Self {
        Self::Incoming(b)
    }
}

/// The largest rest of a body dropped unread that is read (and discarded) to keep the
/// connection; past it the connection closes.
pub const DRAINABLE: u64 = 8 * 1024;

/// An HTTP/1 request body that, when dropped unread, keeps its connection usable or says it
/// is not. hyper drains a dropped body with one read at most and otherwise closes the
/// connection — after the response head went out saying keep-alive, so a client that sends
/// its next request on it loses that request. A small rest (≤ [`DRAINABLE`], known length)
/// is handed to the connection (`ConnActivity::leftover`), which reads it before the response
/// head goes out (as Go's net/http does): whether or not its bytes have arrived yet, the
/// connection stays usable. Anything else marks the connection, and `serve.rs` says
/// `Connection: close` in the head.
pub struct WatchedIncoming {
    inner: Option<hyper::body::Incoming>,
    activity: std::sync::Arc<crate::service::ConnActivity>,
    ended: bool,
    /// A small rest may be read after the handler (not when the client waits for
    /// `100 Continue`: reading would invite the body nobody wants).
    keep_small: bool,
}

impl WatchedIncoming {
    /// Watch `inner` for `activity`'s connection.
    pub fn new(
        inner: hyper::body::Incoming,
        activity: std::sync::Arc<crate::service::ConnActivity>,
        keep_small: bool,
    ) -> Self {
        activity.body_unread.store(false, std::sync::atomic::Ordering::Relaxed);
        *activity
            .leftover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Leftover::Pending;
        Self {
            inner: Some(inner),
            activity,
            ended: false,
            keep_small,
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.ended = true;
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(hyper::body::Body::size_hint)
            .unwrap_or_default()
    }
}

impl Drop for WatchedIncoming {
    fn drop(&mut self) {
        if self.ended || self.is_end_stream() {
            return;
        }
        let small = self.size_hint().exact().is_some_and(|left| left <= DRAINABLE);
        if small && self.keep_small {
            let mut slot = self
                .activity
                .leftover
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Only before the response head: after it nobody would read the rest, and hyper
            // waits for this body to go before it reads the next request.
            if matches!(*slot, Leftover::Pending) {
                if let Some(rest) = self.inner.take() {
                    *slot = Leftover::Kept(rest);
                }
                return;
            }
        }
        self.activity
            .body_unread
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The small rest of an HTTP/1 request body dropped unread (see [`WatchedIncoming`]).
#[derive(Default)]
pub enum Leftover {
    /// The response head is out (or no body is watched): a body dropped now goes to hyper.
    #[default]
    Answered,
    /// The response is not ready: a small rest would be kept.
    Pending,
    /// Kept for the connection to read before the response head.
    Kept(hyper::body::Incoming),
}

/// Read the rest of a body dropped unread (see [`WatchedIncoming`]) and discard it; `false`
/// when it did not end within `wait` or failed (the connection must then close).
pub async fn drain_rest(mut rest: hyper::body::Incoming, wait: std::time::Duration) -> bool {
    use http_body_util::BodyExt;
    let read = async {
        while let Some(frame) = rest.frame().await {
            if frame.is_err() {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(wait, read).await.unwrap_or(false)
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Watched(b) => b.poll_frame(cx),
            Self::Full(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            Self::Channel(rx) => rx.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Incoming(b) => b.is_end_stream(),
            Self::Watched(b) => b.is_end_stream(),
            Self::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Self::Channel(rx) => rx.is_closed() && rx.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Incoming(b) => b.size_hint(),
            Self::Watched(b) => b.size_hint(),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Channel(_) => SizeHint::default(),
        }
    }
}

/// Why a streamed request body ended early.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// More than `max_body_size` bytes arrived.
    #[error("the request body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// The body did not arrive within `timeouts.read_body`.
    #[error("the request body was not received in time")]
    Timeout,
    /// The connection failed.
    #[error("could not read the request body: {0}")]
    Read(BoxError),
}

pin_project_lite::pin_project! {
    /// A request body handed to an endpoint as a stream, for routes that take it
    /// unbuffered: the size limit and the read deadline still hold frame by frame.
    pub struct RequestStream {
        #[pin]
        inner: RequestBody,
        #[pin]
        deadline: tokio::time::Sleep,
        remaining: u64,
        limit: u64,
    }
}

impl RequestStream {
    /// Stream `inner`, at most `limit` bytes, finished within `timeout`.
    pub fn new(inner: RequestBody, limit: u64, timeout: std::time::Duration) -> Self {
        Self {
            inner,
            deadline: tokio::time::sleep(timeout),
            remaining: limit,
            limit,
        }
    }
}

impl Body for RequestStream {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = self.project();
        if this.deadline.poll(cx).is_ready() {
            return Poll::Ready(Some(Err(StreamError::Timeout)));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.remaining {
                        *this.remaining = 0;
                        return Poll::Ready(Some(Err(StreamError::TooLarge(*this.limit))));
                    }
                    *this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(StreamError::Read(e)))),
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl ResponseBody {
    /// This body followed by a trailers frame (gRPC status, checksums). hyper sends
    /// trailers on HTTP/2, and on chunked HTTP/1.1 when the request said `TE: trailers`.
    #[must_use]
    pub fn with_trailers(self, trailers: http::HeaderMap) -> Self {
        let fut = std::future::ready(Some(Ok(trailers)));
        Self::Boxed(http_body_util::BodyExt::boxed(http_body_util::BodyExt::with_trailers(
            self, fut,
        )))
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/2 streamed response body that keeps its stream counted as open (for the
    /// idle timer) and counts its bytes as unsent (for the buffered-data caps).
    pub struct CountedBody {
        #[pin]
        inner: ResponseBody,
        activity: std::sync::Arc<crate::service::ConnActivity>,
        budgets: std::sync::Arc<crate::service::Budgets>,
    }

    impl PinnedDrop for CountedBody {
        fn drop(this: Pin<&mut Self>) {
            this.activity.streams.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

impl CountedBody {
    /// Wrap `inner`; the caller has counted the stream as open.
    pub fn new(
        inner: ResponseBody,
        activity: std::sync::Arc<crate::service::ConnActivity>,
        budgets: std::sync::Arc<crate::service::Budgets>,
    ) -> Self {
        Self {
            inner,
            activity,
            budgets,
        }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &r {
            if let Some(d) = frame.data_ref() {
                let n = d.len() as u64;
                this.activity.unsent.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
                this.budgets.h2_unsent.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
