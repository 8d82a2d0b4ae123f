//! The boundary between the data plane and whatever runs handlers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;

use crate::body::ResponseBody;
use crate::router::Route;

/// A request that matched a route, with its body already read (within the limits).
pub struct RoutedRequest {
    /// Method, URI, version, headers and extensions.
    pub parts: http::request::Parts,
    /// The whole body (at most `limits.max_body_size` bytes); empty when `stream` is set.
    pub body: Bytes,
    /// The body as a stream, for routes declared with `stream_body` (limits still hold).
    pub stream: Option<Box<crate::body::RequestStream>>,
    /// Path parameters, percent-decoded, in path order.
    pub params: Vec<(Arc<str>, String)>,
    /// The route that matched.
    pub route: Arc<Route<usize>>,
    /// The socket peer (absent for in-process test requests).
    pub peer: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

/// Runs the handler a route leads to. Implemented by `cello-py` for Python and by the
/// sidecar as a reverse proxy. It must always produce a response: failures become
/// problem+json responses, never panics.
pub trait Endpoint: Send + Sync + 'static {
    /// Handle one routed request.
    fn call(&self, req: RoutedRequest) -> ResponseFuture;
}

impl<F, Fut> Endpoint for F
where
    F: Fn(RoutedRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    fn call(&self, req: RoutedRequest) -> ResponseFuture {
        Box::pin(self(req))
    }
}
