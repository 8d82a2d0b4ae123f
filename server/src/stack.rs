//! The request path as one tower stack, built once from the config by [`build`].
//!
//! Order, outermost first (only enabled layers are present; [`describe`] lists them):
//!
//! 1. `probes`      — `/health/*` and `/metrics`, answered before anything is counted
//!    (`health.enabled` / `prometheus.enabled`).
//! 2. `connection`  — in-flight accounting for the connection watchdog and the
//!    per-connection request cap (`Connection: close` on the last one). Always on.
//! 3. `access`      — one [`AccessRecord`] per request (`access_log`).
//! 4. `observe`     — request metrics and the server span (`prometheus` / `telemetry`).
//!    The access layer wraps it because it logs the span's ids.
//! 5. *(slot for the Rust middleware of DESIGN.md §2b, in its order: request-id →
//!    CORS → security headers → compression → rate limit → auth → session → CSRF →
//!    cache → circuit breaker; each an `option_layer` here.)*
//! 6. `trusted_proxy` — client address, scheme and host from forwarding headers, when
//!    the peer is a `trusted_proxies` entry ([`ClientInfo`]).
//! 7. `root_path`   — the part of the path the router ignores (`root_path`).
//! 8. `protocol`    — one Host header on HTTP/1.1, valid percent-encoding. Always on.
//! 9. router (the service itself) — 404, 405, OPTIONS, HEAD, then the route's own stack
//!    (per-route body limit, timeout, ...) and its [`Target`](crate::target::Target):
//!    body limit and read timeout, Python middleware and the handler live behind it.
//!
//! The whole stack is one concrete type, boxed once into [`HttpService`]; layer futures
//! are concrete too, so a request costs one box for the stack plus the router's.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service, ServiceBuilder};

use crate::body::{RequestBody, ResponseBody};
use crate::ext::{ClientInfo, ConnInfo, MatchedRoute, RootPrefix, TraceIds};
use crate::metrics::observe::Observation;
use crate::problem::problem;
use crate::router::Lookup;
use crate::service::{AccessRecord, AppState};
use crate::target::{BoxFuture, RouteCall};

/// A request as the stack takes it.
pub type Req = Request<RequestBody>;
/// A response as the stack gives it.
pub type Resp = Response<ResponseBody>;

trait Erased: Send + Sync {
    fn run(&self, req: Req) -> BoxFuture;
}

impl<S> Erased for S
where
    S: Service<Req, Response = Resp, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn run(&self, req: Req) -> BoxFuture {
        // Cloning the concrete stack copies a few `Arc`s; the future is the one box.
        Box::pin(Service::call(&mut self.clone(), req))
    }
}

/// The assembled stack: cheap to clone, `Sync`, never fails (errors are responses).
#[derive(Clone)]
pub struct HttpService(Arc<dyn Erased>);

impl HttpService {
    /// Run one request (no `poll_ready` needed: the stack is always ready).
    pub fn run(&self, req: Req) -> BoxFuture {
        self.0.run(req)
    }
}

impl Service<Req> for HttpService {
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFuture;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Req) -> BoxFuture {
        self.0.run(req)
    }
}

/// The layer names of the stack `state` gets, outermost first.
pub fn describe(state: &AppState) -> Vec<&'static str> {
    let c = &state.config;
    let mut out = Vec::new();
    if state.metrics.is_some() || state.health.is_some() {
        out.push("probes");
    }
    out.push("connection");
    if state.access.is_some() {
        out.push("access");
    }
    if state.metrics.is_some() || state.telemetry.is_some() {
        out.push("observe");
    }
    if !c.trusted_proxies.is_empty() {
        out.push("trusted_proxy");
    }
    if state.root_path.is_some() {
        out.push("root_path");
    }
    out.push("protocol");
    out.push("router");
    out
}

/// Build the stack for `state` (see the module docs for the order).
pub fn build(state: &Arc<AppState>) -> HttpService {
    let st = |on: bool| on.then(|| state.clone());
    let svc = ServiceBuilder::new()
        .option_layer(st(state.metrics.is_some() || state.health.is_some()).map(ProbesLayer))
        .layer(ConnLayer(state.clone()))
        .option_layer(st(state.access.is_some()).map(AccessLayer))
        .option_layer(st(state.metrics.is_some() || state.telemetry.is_some()).map(ObserveLayer))
        // DESIGN.md §2b middleware goes here, each as `.option_layer(...)`.
        .option_layer(st(!state.trusted.is_empty()).map(TrustedProxyLayer))
        .option_layer(st(state.root_path.is_some()).map(RootPathLayer))
        .layer(ProtocolLayer)
        .service(RouterService(state.clone()));
    HttpService(Arc::new(svc))
}

// ---- shared plumbing -------------------------------------------------------------

/// Work a layer does on the response after its inner service answered.
pub trait Post: Send {
    /// Finish the response.
    fn post(self, resp: Resp) -> Resp;
}

pin_project! {
    /// The inner service's future, then [`Post::post`].
    pub struct Then<F, P> {
        #[pin]
        inner: F,
        post: Option<P>,
    }
}

impl<F, P> Future for Then<F, P>
where
    F: Future<Output = Result<Resp, Infallible>>,
    P: Post,
{
    type Output = Result<Resp, Infallible>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(resp)) => Poll::Ready(Ok(match this.post.take() {
                Some(p) => p.post(resp),
                None => resp,
            })),
            Poll::Ready(Err(e)) => match e {},
            Poll::Pending => Poll::Pending,
        }
    }
}

macro_rules! layer {
    ($layer:ident => $svc:ident) => {
        impl<S> Layer<S> for $layer {
            type Service = $svc<S>;
            fn layer(&self, inner: S) -> $svc<S> {
                $svc {
                    inner,
                    state: self.0.clone(),
                }
            }
        }
        #[doc = concat!("The service of [`", stringify!($layer), "`].")]
        #[derive(Clone)]
        pub struct $svc<S> {
            inner: S,
            state: Arc<AppState>,
        }
    };
}

fn ready(resp: Resp) -> Ready<Result<Resp, Infallible>> {
    futures_util::future::ready(Ok(resp))
}

// ---- probes ----------------------------------------------------------------------

/// `/health/*` and `/metrics` before anything else.
pub struct ProbesLayer(Arc<AppState>);
layer!(ProbesLayer => Probes);

impl<S> Service<Req> for Probes<S>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Either<BoxFuture, S::Future>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        if !crate::health::is_builtin(&self.state, &req) {
            return Either::Right(self.inner.call(req));
        }
        let state = self.state.clone();
        Either::Left(Box::pin(async move {
            Ok(crate::health::builtin(&state, &req)
                .await
                .unwrap_or_else(|| problem(StatusCode::NOT_FOUND, "no such probe")))
        }))
    }
}

// ---- connection ------------------------------------------------------------------

/// In-flight accounting and the per-connection request cap.
pub struct ConnLayer(Arc<AppState>);
layer!(ConnLayer => Conn);

/// See [`ConnLayer`].
pub struct ConnPost {
    conn: Option<ConnInfo>,
    close: bool,
}

impl Post for ConnPost {
    fn post(self, mut resp: Resp) -> Resp {
        if self.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(c) = self.conn {
            c.activity.inflight.fetch_sub(1, Ordering::AcqRel);
        }
        resp
    }
}

impl<S> Service<Req> for Conn<S>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Then<S::Future, ConnPost>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        let conn = req.extensions().get::<ConnInfo>().cloned();
        let mut close = false;
        if let Some(c) = &conn {
            let act = &c.activity;
            act.inflight.fetch_add(1, Ordering::AcqRel);
            act.head_since_ms.store(0, Ordering::Release);
            let n = act.served.fetch_add(1, Ordering::Relaxed) + 1;
            let max = self.state.config.limits.max_requests_per_connection;
            close = max > 0 && n >= max;
        }
        Then {
            inner: self.inner.call(req),
            post: Some(ConnPost { conn, close }),
        }
    }
}

// ---- access ----------------------------------------------------------------------

/// One access record per request.
pub struct AccessLayer(Arc<AppState>);
layer!(AccessLayer => Access);

/// See [`AccessLayer`].
pub struct AccessPost {
    state: Arc<AppState>,
    method: Method,
    target: String,
    version: http::Version,
    start: std::time::Instant,
    peer: Option<std::net::SocketAddr>,
}

impl Post for AccessPost {
    fn post(self, mut resp: Resp) -> Resp {
        let Some(sink) = &self.state.access else { return resp };
        let size = http_body::Body::size_hint(resp.body()).exact().or_else(|| {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        });
        let trace = resp.extensions_mut().remove::<TraceIds>().map(|t| (t.0, t.1));
        sink(AccessRecord {
            method: self.method,
            target: self.target,
            version: self.version,
            status: resp.status().as_u16(),
            size,
            duration: self.start.elapsed(),
            peer: self.peer,
            trace,
        });
        resp
    }
}

impl<S> Service<Req> for Access<S>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Then<S::Future, AccessPost>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        let post = AccessPost {
            state: self.state.clone(),
            method: req.method().clone(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned()),
            version: req.version(),
            start: std::time::Instant::now(),
            peer: req.extensions().get::<ConnInfo>().and_then(|c| c.peer),
        };
        Then {
            inner: self.inner.call(req),
            post: Some(post),
        }
    }
}

// ---- observe ---------------------------------------------------------------------

/// Request metrics and the server span.
pub struct ObserveLayer(Arc<AppState>);
layer!(ObserveLayer => Observe);

/// See [`ObserveLayer`].
pub struct ObservePost(Arc<AppState>, Observation);

impl Post for ObservePost {
    fn post(self, mut resp: Resp) -> Resp {
        self.1.finish(&self.0, &mut resp);
        resp
    }
}

impl<S> Service<Req> for Observe<S>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Then<S::Future, ObservePost>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        let (obs, req) = Observation::begin(&self.state, req);
        Then {
            inner: self.inner.call(req),
            post: Some(ObservePost(self.state.clone(), obs)),
        }
    }
}

// ---- trusted proxies -------------------------------------------------------------

/// Resolves the client behind a trusted proxy into [`ClientInfo`].
pub struct TrustedProxyLayer(Arc<AppState>);
layer!(TrustedProxyLayer => TrustedProxy);

impl<S: Service<Req>> Service<Req> for TrustedProxy<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut req: Req) -> S::Future {
        let peer = req.extensions().get::<ConnInfo>().and_then(|c| c.peer);
        if let Some(peer) = peer.filter(|p| self.state.is_trusted(p.ip())) {
            let info = crate::forwarded::resolve(&self.state, peer.ip(), req.headers());
            req.extensions_mut().insert::<ClientInfo>(info);
        }
        self.inner.call(req)
    }
}

// ---- root path -------------------------------------------------------------------

/// Marks the `root_path` prefix the router skips.
pub struct RootPathLayer(Arc<AppState>);
layer!(RootPathLayer => RootPath);

impl<S: Service<Req>> Service<Req> for RootPath<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut req: Req) -> S::Future {
        let path = req.uri().path();
        let rest = self.state.root_path.as_deref().and_then(|r| path.strip_prefix(r));
        let n = match rest {
            Some("") => Some(path.len()),
            Some(rest) if rest.starts_with('/') => Some(path.len() - rest.len()),
            _ => None,
        };
        if let Some(n) = n {
            req.extensions_mut().insert(RootPrefix(n));
        }
        self.inner.call(req)
    }
}

// ---- protocol --------------------------------------------------------------------

/// RFC 9112 Host rules and percent-encoding of the path.
#[derive(Clone, Copy)]
pub struct ProtocolLayer;

impl<S> Layer<S> for ProtocolLayer {
    type Service = Protocol<S>;
    fn layer(&self, inner: S) -> Protocol<S> {
        Protocol { inner }
    }
}

/// See [`ProtocolLayer`].
#[derive(Clone)]
pub struct Protocol<S> {
    inner: S,
}

impl<S> Service<Req> for Protocol<S>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Either<Ready<Result<Resp, Infallible>>, S::Future>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        // RFC 9112 §3.2: an HTTP/1.1 request with no Host, or more than one, is a 400.
        if req.version() == http::Version::HTTP_11 {
            let mut hosts = req.headers().get_all(header::HOST).iter();
            if hosts.next().is_none() || hosts.next().is_some() {
                return Either::Left(ready(problem(
                    StatusCode::BAD_REQUEST,
                    "an HTTP/1.1 request needs exactly one Host header",
                )));
            }
        }
        if !crate::service::path_is_valid(req.uri().path()) {
            return Either::Left(ready(problem(
                StatusCode::BAD_REQUEST,
                "the request path is not valid percent-encoded UTF-8",
            )));
        }
        Either::Right(self.inner.call(req))
    }
}

// ---- router ----------------------------------------------------------------------

/// Routing and the automatic answers (404, 405, OPTIONS, HEAD), then the target.
#[derive(Clone)]
pub struct RouterService(Arc<AppState>);

fn allow_header(allow: &[String]) -> HeaderValue {
    HeaderValue::from_str(&allow.join(", ")).unwrap_or_else(|_| HeaderValue::from_static("GET"))
}

impl RouterService {
    /// Route `req`: an immediate answer, or the call for the matched route.
    // Both arms are moved once, straight into a future: boxing would cost an allocation.
    #[allow(clippy::result_large_err)]
    fn route(&self, req: Req) -> Result<RouteCall, Resp> {
        let path = req.uri().path();
        let route_path = match req.extensions().get::<RootPrefix>() {
            Some(RootPrefix(n)) => match path.get(*n..) {
                Some("") | None => "/",
                Some(rest) => rest,
            },
            None => path,
        };
        let method = req.method();
        match self.0.router.lookup(method, route_path) {
            Lookup::Found { route, params, .. } => {
                let route = route.clone();
                let conn = req.extensions().get::<ConnInfo>().cloned();
                Ok(RouteCall {
                    req,
                    params,
                    route,
                    conn,
                })
            }
            Lookup::NotFound => Err(problem(StatusCode::NOT_FOUND, format!("no route for {method} {path}"))),
            Lookup::BadPath => Err(problem(
                StatusCode::BAD_REQUEST,
                "the request path is not valid percent-encoded UTF-8",
            )),
            Lookup::MethodNotAllowed { allow } => {
                let mut r = problem(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed on {path}; allowed: {}", allow.join(", ")),
                );
                r.headers_mut().insert(header::ALLOW, allow_header(&allow));
                Err(r)
            }
            Lookup::Options { allow } => {
                let mut r = Response::new(ResponseBody::Empty);
                *r.status_mut() = StatusCode::NO_CONTENT;
                r.headers_mut().insert(header::ALLOW, allow_header(&allow));
                Err(r)
            }
        }
    }
}

impl Service<Req> for RouterService {
    type Response = Resp;
    type Error = Infallible;
    type Future = Either<Ready<Result<Resp, Infallible>>, BoxFuture>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Req) -> Self::Future {
        let head = req.method() == Method::HEAD;
        let call = match self.route(req) {
            Ok(call) => call,
            Err(resp) => return Either::Left(ready(resp)),
        };
        let state = self.0.clone();
        Either::Right(Box::pin(async move {
            let route = state.observed.then(|| call.route.clone());
            let entry = &state.targets[call.route.target];
            let mut resp = match &entry.stack {
                Some(stack) => match tower::ServiceExt::oneshot(stack.clone(), call).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                },
                None => crate::target::dispatch(&state.config, &entry.target, &entry.options, call).await,
            };
            if head {
                // Keep the headers (Content-Length included) and drop the body.
                if let ResponseBody::Full(Some(b)) = resp.body() {
                    let len = HeaderValue::from(b.len());
                    resp.headers_mut().entry(header::CONTENT_LENGTH).or_insert(len);
                }
                *resp.body_mut() = ResponseBody::Empty;
            }
            if let Some(route) = route {
                resp.extensions_mut().insert(MatchedRoute(route));
            }
            Ok(resp)
        }))
    }
}
