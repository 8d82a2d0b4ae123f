//! The per-request pipeline: path checks, routing, automatic HEAD/OPTIONS/405,
//! body limits and timeouts, then the endpoint.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cello_config::ServerConfig;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use crate::body::ResponseBody;
use crate::endpoint::{Endpoint, RoutedRequest};
use crate::problem::problem;
use crate::router::{Lookup, Router};

/// One finished request, for the access log.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// Request method.
    pub method: http::Method,
    /// Path and query as received.
    pub target: String,
    /// HTTP version.
    pub version: http::Version,
    /// Response status.
    pub status: u16,
    /// Body size when known up front (`Content-Length`), else `None` (streamed).
    pub size: Option<u64>,
    /// Time from request head to response head.
    pub duration: std::time::Duration,
    /// Socket peer.
    pub peer: Option<SocketAddr>,
    /// (trace id, span id) of the request's server span, when tracing is on.
    pub trace: Option<(String, String)>,
}

/// Receives access records; must not block (it runs on the I/O thread).
pub type AccessSink = Arc<dyn Fn(AccessRecord) + Send + Sync>;

/// Everything shared by all connections of one server: immutable after start.
pub struct AppState {
    /// The compiled route table (targets are handler indices).
    pub router: Router<usize>,
    /// Runs matched requests.
    pub endpoint: Arc<dyn Endpoint>,
    /// Validated configuration.
    pub config: ServerConfig,
    /// Parsed `trusted_proxies`.
    pub trusted: Vec<(IpAddr, u8)>,
    /// Access log receiver, when `access_log` is on.
    pub access: Option<AccessSink>,
    /// `root_path` without a trailing slash, when set (the app is mounted under it).
    pub root_path: Option<Arc<str>>,
    /// Prometheus metrics, when `prometheus.enabled`.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Health probes, when `health.enabled`.
    pub health: Option<Arc<crate::health::Health>>,
    /// Tracing, when `telemetry.enabled`.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

impl AppState {
    /// Build from parts; `config` must already be validated.
    pub fn new(router: Router<usize>, endpoint: Arc<dyn Endpoint>, config: ServerConfig) -> Self {
        let trusted = config
            .trusted_proxies
            .iter()
            .filter_map(|p| cello_config::parse_cidr(p))
            .collect();
        // Every registered method is at least one route target: a dense table for metrics.
        let targets = router.routes().iter().map(|(m, _)| m.len()).sum();
        let metrics = config
            .prometheus
            .enabled
            .then(|| Arc::new(crate::metrics::Metrics::new(&config, targets)));
        let health = config
            .health
            .enabled
            .then(|| Arc::new(crate::health::Health::new(config.health.clone())));
        let telemetry = config
            .telemetry
            .enabled
            .then(|| crate::telemetry::Telemetry::new(config.telemetry.clone()));
        let root_path = Some(config.root_path.trim_end_matches('/'))
            .filter(|p| !p.is_empty())
            .map(Arc::from);
        Self {
            root_path,
            router,
            endpoint,
            config,
            trusted,
            access: None,
            metrics,
            health,
            telemetry,
        }
    }

    /// Send access records to `sink`.
    #[must_use]
    pub fn with_access_log(mut self, sink: AccessSink) -> Self {
        self.access = Some(sink);
        self
    }

    /// Whether `peer` is a configured trusted proxy.
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|(net, len)| in_cidr(peer, *net, *len))
    }
}

/// CIDR membership, treating IPv4-mapped IPv6 peers as IPv4.
pub fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            (u32::from(a) & mask) == (u32::from(b) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            (u128::from(a) & mask) == (u128::from(b) & mask)
        }
        _ => false,
    }
}

/// What the connection watchdog needs to know (idle and slow-header timeouts).
#[derive(Default)]
pub struct ConnActivity {
    /// Reads and writes so far.
    pub io_events: AtomicU64,
    /// Requests in flight (the timers only run at zero).
    pub inflight: AtomicU64,
    /// Requests served on this connection so far.
    pub served: AtomicU64,
    /// Milliseconds since `ConnInfo::epoch` when bytes of a request head started
    /// arriving with no request in flight; 0 when no head is pending.
    pub head_since_ms: AtomicU64,
    /// The connection speaks HTTP/2 (no per-request head timer).
    pub h2: std::sync::atomic::AtomicBool,
    /// Counts the connection in the open-connections gauge while it lives.
    pub counted: crate::metrics::ConnGuard,
}

/// Per-connection facts the pipeline needs.
#[derive(Clone)]
pub struct ConnInfo {
    /// Socket peer.
    pub peer: Option<SocketAddr>,
    /// TLS connection.
    pub tls: bool,
    /// Shared with the connection's I/O wrapper and watchdog.
    pub activity: Arc<ConnActivity>,
    /// When the connection was accepted.
    pub epoch: std::time::Instant,
}

impl ConnInfo {
    /// Facts for a fresh connection.
    pub fn new(peer: Option<SocketAddr>, tls: bool) -> Self {
        Self {
            peer,
            tls,
            activity: Arc::default(),
            epoch: std::time::Instant::now(),
        }
    }
}

/// `path` without the app's root path: a proxy may forward `/api/items` or, having
/// stripped its prefix, `/items`; both reach the route `/items`.
pub fn strip_root_path<'a>(path: &'a str, root: Option<&str>) -> &'a str {
    match root.and_then(|r| path.strip_prefix(r)) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// `true` when `path` is valid percent-encoding of UTF-8.
fn path_is_valid(path: &str) -> bool {
    let b = path.as_bytes();
    if !b.contains(&b'%') {
        return true; // http::Uri already guarantees visible ASCII
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |k: usize| b.get(k).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(path).decode_utf8().is_ok()
}

fn allow_header(allow: &[String]) -> HeaderValue {
    HeaderValue::from_str(&allow.join(", ")).unwrap_or_else(|_| HeaderValue::from_static("GET"))
}

/// Read the body within the size limit and the read timeout.
async fn read_body<B>(
    config: &ServerConfig,
    parts: &http::request::Parts,
    body: B,
) -> Result<Bytes, Response<ResponseBody>>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = config.limits.max_body_size;
    if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
        let len = len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
        match len {
            Some(n) if n > max => {
                return Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body of {n} bytes exceeds the limit of {max} bytes"),
                ));
            }
            Some(_) => {}
            None => return Err(problem(StatusCode::BAD_REQUEST, "invalid Content-Length")),
        }
    }
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let timeout = Duration::from_secs_f64(config.timeouts.read_body);
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body exceeds the limit of {max} bytes"),
        )),
        Ok(Err(e)) => Err(problem(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        )),
        Err(_) => Err(problem(
            StatusCode::REQUEST_TIMEOUT,
            "the request body was not received in time",
        )),
    }
}

/// Run one request through the pipeline. Never fails: errors are responses.
pub async fn handle<B>(state: Arc<AppState>, conn: ConnInfo, req: Request<B>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if state.metrics.is_some() || state.health.is_some() {
        if let Some(resp) = crate::health::builtin(&state, &req).await {
            return resp;
        }
    }
    let act = &conn.activity;
    act.inflight.fetch_add(1, Ordering::AcqRel);
    act.head_since_ms.store(0, Ordering::Release);
    let n = act.served.fetch_add(1, Ordering::Relaxed) + 1;
    let record = state.access.as_ref().map(|_| {
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        (req.method().clone(), target, req.version(), std::time::Instant::now())
    });
    let mut obs = crate::metrics::observe::Observation::begin(&state, &req);
    let mut resp = dispatch(&state, &conn, req, &mut obs).await;
    let trace = obs.finish(&state, &conn, &mut resp);
    if let (Some(sink), Some((method, target, version, start))) = (&state.access, record) {
        let size = http_body::Body::size_hint(resp.body()).exact().or_else(|| {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        });
        sink(AccessRecord {
            method,
            target,
            version,
            status: resp.status().as_u16(),
            size,
            duration: start.elapsed(),
            peer: conn.peer,
            trace,
        });
    }
    let max = state.config.limits.max_requests_per_connection;
    if max > 0 && n >= max {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    act.inflight.fetch_sub(1, Ordering::AcqRel);
    resp
}

async fn dispatch<B>(
    state: &AppState,
    conn: &ConnInfo,
    req: Request<B>,
    obs: &mut crate::metrics::observe::Observation,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // RFC 9112 §3.2: an HTTP/1.1 request with no Host, or more than one, is a 400.
    if req.version() == http::Version::HTTP_11 {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        if hosts.next().is_none() || hosts.next().is_some() {
            return problem(
                StatusCode::BAD_REQUEST,
                "an HTTP/1.1 request needs exactly one Host header",
            );
        }
    }
    let path = req.uri().path();
    if !path_is_valid(path) {
        return problem(
            StatusCode::BAD_REQUEST,
            "the request path is not valid percent-encoded UTF-8",
        );
    }
    let method = req.method().clone();
    let route_path = strip_root_path(path, state.root_path.as_deref());
    let (route, params) = match state.router.lookup(&method, route_path) {
        Lookup::Found { route, params, .. } => (route.clone(), params),
        Lookup::NotFound => return problem(StatusCode::NOT_FOUND, format!("no route for {method} {path}")),
        Lookup::BadPath => {
            return problem(
                StatusCode::BAD_REQUEST,
                "the request path is not valid percent-encoded UTF-8",
            );
        }
        Lookup::MethodNotAllowed { allow } => {
            let mut r = problem(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}; allowed: {}", allow.join(", ")),
            );
            r.headers_mut().insert(header::ALLOW, allow_header(&allow));
            return r;
        }
        Lookup::Options { allow } => {
            let mut r = Response::new(ResponseBody::Empty);
            *r.status_mut() = StatusCode::NO_CONTENT;
            r.headers_mut().insert(header::ALLOW, allow_header(&allow));
            return r;
        }
    };
    obs.matched(&route);
    let (mut parts, body) = req.into_parts();
    let body = match read_body(&state.config, &parts, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    obs.routed(state, &mut parts, body.len(), conn);
    let routed = RoutedRequest {
        parts,
        body,
        params,
        route,
        peer: conn.peer,
        tls: conn.tls,
    };
    let mut resp = state.endpoint.call(routed).await;
    if method == Method::HEAD {
        // Keep the headers (Content-Length included) and drop the body.
        if let ResponseBody::Full(Some(b)) = resp.body() {
            let len = HeaderValue::from(b.len());
            resp.headers_mut().entry(header::CONTENT_LENGTH).or_insert(len);
        }
        *resp.body_mut() = ResponseBody::Empty;
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_path_is_stripped_only_on_a_segment_boundary() {
        assert_eq!(strip_root_path("/api/items", Some("/api")), "/items");
        assert_eq!(strip_root_path("/api", Some("/api")), "/");
        assert_eq!(strip_root_path("/items", Some("/api")), "/items");
        assert_eq!(strip_root_path("/apix/items", Some("/api")), "/apix/items");
        assert_eq!(strip_root_path("/api/items", None), "/api/items");
    }

    #[test]
    fn percent_encoding_validation() {
        assert!(path_is_valid("/a/b"));
        assert!(path_is_valid("/a%20b"));
        assert!(path_is_valid("/%C3%A9"));
        assert!(!path_is_valid("/%"));
        assert!(!path_is_valid("/%2"));
        assert!(!path_is_valid("/%zz"));
        assert!(!path_is_valid("/%ff%fe"));
    }

    #[test]
    fn cidr_membership() {
        let net: IpAddr = "10.0.0.0".parse().unwrap();
        assert!(in_cidr("10.1.2.3".parse().unwrap(), net, 8));
        assert!(!in_cidr("11.1.2.3".parse().unwrap(), net, 8));
        assert!(in_cidr("::ffff:10.0.0.1".parse().unwrap(), net, 8));
        assert!(in_cidr("::1".parse().unwrap(), "::1".parse().unwrap(), 128));
        assert!(in_cidr("1.2.3.4".parse().unwrap(), "0.0.0.0".parse().unwrap(), 0));
    }
}
