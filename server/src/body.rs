//! Response bodies: one enum so the common cases (empty, one buffer) need no box.

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
