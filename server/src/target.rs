//! What a route leads to. Python handlers are one kind of [`Target`]; the others are
//! answered in Rust without the GIL.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use crate::body::{RequestBody, RequestStream, ResponseBody};
use crate::endpoint::{Endpoint, ResponseFuture, RoutedRequest};
use crate::ext::BodyLimit;
use crate::problem::problem;
use crate::router::Route;
use crate::service::{BodyReservation, ConnInfo};
use cello_config::ServerConfig;

/// A route's destination.
pub enum Target {
    /// Code behind the [`Endpoint`] trait (a Python handler via `cello-py`).
    Endpoint(Arc<dyn Endpoint>),
    /// A fixed document, e.g. `/openapi.json`.
    Document {
        /// The bytes served.
        body: Bytes,
        /// Its `Content-Type`.
        content_type: HeaderValue,
    },
    /// A proxied upstream (the sidecar).
    Proxy(Arc<crate::proxy::ProxyEndpoint>),
    /// A directory of static files (a `staticFiles` mount), served on the I/O thread.
    Static(Arc<crate::statics::StaticMount>),
    /// A WebSocket route: the handshake is checked here (426/400 when it is not one), then
    /// the endpoint gets the request with a [`crate::websocket::Handshake`] in its
    /// extensions and answers `101` by accepting it (or refuses with any other response).
    WebSocket(Arc<dyn Endpoint>),
    /// A gRPC service (not reachable from config yet).
    Grpc,
}

impl Target {
    /// A fixed document served as-is.
    pub fn document(body: impl Into<Bytes>, content_type: &'static str) -> Self {
        Self::Document {
            body: body.into(),
            content_type: HeaderValue::from_static(content_type),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Endpoint(_) => "endpoint",
            Self::Document { .. } => "document",
            Self::Proxy(_) => "proxy",
            Self::Static(_) => "static files",
            Self::WebSocket(_) => "WebSocket",
            Self::Grpc => "gRPC",
        }
    }
}

/// Per-route settings; each one that is set adds a layer to the route's own stack.
#[derive(Clone, Debug, Default)]
pub struct RouteOptions {
    /// Body limit for this route (overrides `limits.max_body_size`).
    pub max_body_size: Option<u64>,
    /// Time limit for this route's whole answer (504 when exceeded).
    pub timeout: Option<Duration>,
    /// Hand the endpoint the body as a [`RequestStream`] instead of buffered bytes.
    pub stream_body: bool,
}

/// A matched request on its way to a target.
pub struct RouteCall {
    /// The request (its body not read yet).
    pub req: Request<RequestBody>,
    /// Path parameters.
    pub params: Vec<(Arc<str>, String)>,
    /// The matched route.
    pub route: Arc<Route<usize>>,
    /// Connection facts.
    pub conn: Option<ConnInfo>,
}

/// A boxed response future of the stack.
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

/// A route's own stack (built when the route has [`RouteOptions`] layers).
pub type RouteStack = tower::util::BoxCloneSyncService<RouteCall, Response<ResponseBody>, Infallible>;

/// One entry of the route table.
pub(crate) struct RouteEntry {
    pub target: Arc<Target>,
    pub options: RouteOptions,
    /// `Some` when the route has layers of its own.
    pub stack: Option<RouteStack>,
}

/// Read the body within `max` bytes and the read timeout.
pub(crate) async fn read_body(
    config: &ServerConfig,
    parts: &http::request::Parts,
    body: RequestBody,
    max: u64,
    budget: Option<&mut BodyReservation>,
) -> Result<Bytes, Response<ResponseBody>> {
    let declared = match parts.headers.get(header::CONTENT_LENGTH) {
        Some(len) => match len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) if n > max => {
                return Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body of {n} bytes exceeds the limit of {max} bytes"),
                ));
            }
            Some(n) => Some(n),
            None => return Err(problem(StatusCode::BAD_REQUEST, "invalid Content-Length")),
        },
        None => None,
    };
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let timeout = Duration::from_secs_f64(config.timeouts.read_body);
    let budget_max = config.limits.max_buffered_bytes;
    let collect = async {
        match budget {
            // A declared length is taken from the budget up front (the common case: one
            // atomic add); a chunked body takes it frame by frame.
            Some(res) if budget_max > 0 => {
                if let Some(n) = declared {
                    if !res.grow(n, budget_max) {
                        return Err(BodyError::Budget);
                    }
                }
                let mut body = Limited::new(body, limit);
                let mut buf = bytes::BytesMut::new();
                let mut first: Option<Bytes> = None;
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(BodyError::Read)?;
                    let Ok(data) = frame.into_data() else { continue };
                    if declared.is_none() && !res.grow(data.len() as u64, budget_max) {
                        return Err(BodyError::Budget);
                    }
                    // One frame is the whole body more often than not: keep it uncopied.
                    match first.take() {
                        None if buf.is_empty() => first = Some(data),
                        prev => {
                            if let Some(p) = prev {
                                // Sized once from the declared length: no doubling copies.
                                let want = declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
                                buf.reserve(want.max(p.len() + data.len()));
                                buf.extend_from_slice(&p);
                            }
                            buf.extend_from_slice(&data);
                        }
                    }
                }
                Ok(first.unwrap_or_else(|| buf.freeze()))
            }
            _ => Limited::new(body, limit)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .map_err(BodyError::Read),
        }
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(BodyError::Budget)) => Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is holding too many request bodies; retry shortly",
        )),
        Ok(Err(BodyError::Read(e))) if e.is::<http_body_util::LengthLimitError>() || chunk_too_large(&*e) => {
            Err(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body exceeds the limit of {max} bytes"),
            ))
        }
        Ok(Err(BodyError::Read(e))) => Err(problem(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        )),
        Err(_) => Err(problem(
            StatusCode::REQUEST_TIMEOUT,
            "the request body was not received in time",
        )),
    }
}

/// The connection refused a declared chunk larger than any body limit.
pub(crate) fn chunk_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<crate::serve::ChunkTooLarge>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|i| i.is::<crate::serve::ChunkTooLarge>()) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

enum BodyError {
    /// `limits.max_buffered_bytes` is spent.
    Budget,
    Read(crate::body::BoxError),
}

/// Answer `call` with `target`.
pub(crate) async fn dispatch(
    config: &ServerConfig,
    target: &Target,
    options: &RouteOptions,
    call: RouteCall,
) -> Response<ResponseBody> {
    let endpoint: &dyn Endpoint = match target {
        Target::Endpoint(e) => &**e,
        Target::Proxy(p) => &**p,
        Target::Document { body, content_type } => {
            let mut r = Response::new(ResponseBody::Full(Some(body.clone())));
            r.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            return r;
        }
        Target::Static(mount) => {
            let rel = call
                .params
                .iter()
                .find(|(n, _)| &**n == crate::statics::PARAM)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let (parts, _) = call.req.into_parts();
            // Boxed, as the WebSocket arm and the rarer body reads below: the state of a
            // branch awaited inline is part of every request's future and moved with it.
            return Box::pin(crate::statics::serve(mount, &parts.method, &parts.headers, rel)).await;
        }
        Target::WebSocket(e) => return Box::pin(dispatch_websocket(config, &**e, call)).await,
        other => {
            return problem(
                StatusCode::NOT_IMPLEMENTED,
                format!("{} routes are not implemented yet", other.kind()),
            )
        }
    };
    let RouteCall {
        req,
        params,
        route,
        conn,
    } = call;
    let (mut parts, body) = req.into_parts();
    let max = parts
        .extensions
        .get::<BodyLimit>()
        .map_or(config.limits.max_body_size, |l| l.0);
    let spool_ok = matches!(target, Target::Endpoint(_));
    // The router leaves `conn` empty: the facts are in the extension.
    let conn = conn.as_ref().or_else(|| parts.extensions.get::<ConnInfo>());
    let (peer, tls) = conn.map_or((None, false), |c| (c.peer, c.tls));
    // Held until the endpoint answered: the body's bytes count against the budget meanwhile.
    let mut budget = conn
        .and_then(|c| c.budgets.as_ref())
        .and_then(|b| b.reserve_body(0, config.limits.max_buffered_bytes));
    let (body, stream) = if options.stream_body {
        if let Err(resp) = Box::pin(read_body(config, &parts, RequestBody::empty(), max, None)).await {
            return resp; // Content-Length over the limit: refused before reading
        }
        let timeout = Duration::from_secs_f64(config.timeouts.read_body);
        (Bytes::new(), Some(Box::new(RequestStream::new(body, max, timeout))))
    } else if spool_ok {
        // The budget counts a declared body up front here too (spooled or not, the handler
        // may still read it into memory), so a flood of large uploads is refused with 503.
        // A body bigger than the whole budget takes all of it rather than never fitting: it
        // spools when the server holds no other body (up to `max`, 413 beyond).
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|n| *n <= max);
        let budget_max = config.limits.max_buffered_bytes;
        if let (Some(res), Some(n)) = (budget.as_mut(), declared) {
            let held = n.min(budget_max);
            if budget_max > 0 && !res.grow(held, budget_max) {
                let mut resp = problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is holding too many request bodies; retry shortly",
                );
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                return resp;
            }
        }
        // Handlers get big bodies through a temporary file, never one big buffer.
        match crate::spool::read(config, &parts, body, max).await {
            Ok((b, spooled)) => {
                // An undeclared (chunked) body counts what is held in memory once read.
                if declared.is_none() && budget_max > 0 {
                    if let Some(res) = budget.as_mut() {
                        if !res.grow((b.len() as u64).min(budget_max), budget_max) {
                            let mut resp = problem(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "the server is holding too many request bodies; retry shortly",
                            );
                            resp.headers_mut()
                                .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                            return resp;
                        }
                    }
                }
                if let Some(s) = spooled {
                    parts.extensions.insert(s);
                }
                (b, None)
            }
            Err(resp) => return resp,
        }
    } else {
        match Box::pin(read_body(config, &parts, body, max, budget.as_mut())).await {
            Ok(b) => (b, None),
            Err(resp) => return resp,
        }
    };
    if let Some(clock) = parts.extensions.get::<Arc<crate::metrics::QueueClock>>() {
        clock.enqueued(body.len() as u64);
    }
    let routed = RoutedRequest {
        parts,
        body,
        stream,
        params,
        route,
        peer,
        tls,
    };
    let resp = endpoint.call(routed).await;
    drop(budget);
    resp
}

/// A WebSocket route: check the handshake, then let the endpoint accept or refuse it.
async fn dispatch_websocket(config: &ServerConfig, endpoint: &dyn Endpoint, call: RouteCall) -> Response<ResponseBody> {
    let RouteCall {
        req,
        params,
        route,
        conn,
    } = call;
    let (mut parts, _) = req.into_parts();
    match crate::websocket::Handshake::from_parts(&mut parts, &config.websocket) {
        Ok(hs) => {
            parts.extensions.insert(crate::websocket::PendingHandshake::new(hs));
        }
        Err(resp) => return resp,
    }
    let conn = conn.as_ref().or_else(|| parts.extensions.get::<ConnInfo>());
    let (peer, tls) = conn.map_or((None, false), |c| (c.peer, c.tls));
    endpoint
        .call(RoutedRequest {
            parts,
            body: Bytes::new(),
            stream: None,
            params,
            route,
            peer,
            tls,
        })
        .await
}

/// The fast path: a body-less request (the caller checks) to an endpoint needs no async step before it, so
/// the endpoint's own future is the route's (no extra box). `Err` gives the call back.
// The call moves straight back to the caller: boxing it would cost the allocation saved here.
#[allow(clippy::result_large_err)]
pub(crate) fn try_direct(
    target: &Target,
    options: &RouteOptions,
    call: RouteCall,
) -> Result<ResponseFuture, RouteCall> {
    let endpoint: &dyn Endpoint = match target {
        Target::Endpoint(e) => &**e,
        Target::Proxy(p) => &**p,
        _ => return Err(call),
    };
    // The router calls this only for a request without a body.
    if options.stream_body {
        return Err(call);
    }
    let RouteCall {
        req,
        params,
        route,
        conn,
    } = call;
    let (parts, _) = req.into_parts();
    if let Some(clock) = parts.extensions.get::<Arc<crate::metrics::QueueClock>>() {
        clock.enqueued(0);
    }
    // The router leaves `conn` empty on this path: the facts are in the extension.
    let conn = conn.as_ref().or_else(|| parts.extensions.get::<ConnInfo>());
    let (peer, tls) = conn.map_or((None, false), |c| (c.peer, c.tls));
    Ok(endpoint.call(RoutedRequest {
        parts,
        body: Bytes::new(),
        stream: None,
        params,
        route,
        peer,
        tls,
    }))
}

/// The innermost service of a route's own stack: the target itself.
#[derive(Clone)]
pub(crate) struct TargetService {
    pub config: Arc<ServerConfig>,
    pub target: Arc<Target>,
    pub options: RouteOptions,
}

impl tower::Service<RouteCall> for TargetService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: RouteCall) -> BoxFuture {
        let this = self.clone();
        Box::pin(async move { Ok(dispatch(&this.config, &this.target, &this.options, call).await) })
    }
}

/// Per-route layer: a body limit of its own.
#[derive(Clone, Copy)]
pub struct RouteBodyLimitLayer(pub u64);

impl<S> tower::Layer<S> for RouteBodyLimitLayer {
    type Service = RouteBodyLimit<S>;
    fn layer(&self, inner: S) -> RouteBodyLimit<S> {
        RouteBodyLimit { inner, limit: self.0 }
    }
}

/// See [`RouteBodyLimitLayer`].
#[derive(Clone)]
pub struct RouteBodyLimit<S> {
    inner: S,
    limit: u64,
}

impl<S: tower::Service<RouteCall>> tower::Service<RouteCall> for RouteBodyLimit<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut call: RouteCall) -> S::Future {
        call.req.extensions_mut().insert(BodyLimit(self.limit));
        self.inner.call(call)
    }
}

/// Per-route layer: answer 504 when the route takes longer than this.
#[derive(Clone, Copy)]
pub struct RouteTimeoutLayer(pub Duration);

impl<S> tower::Layer<S> for RouteTimeoutLayer {
    type Service = RouteTimeout<S>;
    fn layer(&self, inner: S) -> RouteTimeout<S> {
        RouteTimeout { inner, limit: self.0 }
    }
}

/// See [`RouteTimeoutLayer`].
#[derive(Clone)]
pub struct RouteTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> tower::Service<RouteCall> for RouteTimeout<S>
where
    S: tower::Service<RouteCall, Response = Response<ResponseBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, call: RouteCall) -> BoxFuture {
        let (fut, limit) = (self.inner.call(call), self.limit);
        Box::pin(async move {
            tokio::time::timeout(limit, fut)
                .await
                .unwrap_or_else(|_| Ok(problem(StatusCode::GATEWAY_TIMEOUT, "the route did not answer in time")))
        })
    }
}

/// Build the route's own stack, or `None` when it has no layers of its own.
pub(crate) fn route_stack(
    config: &Arc<ServerConfig>,
    target: &Arc<Target>,
    options: &RouteOptions,
) -> Option<RouteStack> {
    if options.max_body_size.is_none() && options.timeout.is_none() {
        return None;
    }
    let svc = tower::ServiceBuilder::new()
        .option_layer(options.timeout.map(RouteTimeoutLayer))
        .option_layer(options.max_body_size.map(RouteBodyLimitLayer))
        .service(TargetService {
            config: config.clone(),
            target: target.clone(),
            options: options.clone(),
        });
    Some(tower::util::BoxCloneSyncService::new(svc))
}
