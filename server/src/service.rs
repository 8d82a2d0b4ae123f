//! State shared by the stack's layers, connection facts and the helpers they use
//! (the request path itself is [`crate::stack`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use cello_config::ServerConfig;

use crate::router::Router;
use crate::target::RouteEntry;

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
    /// The request id, when the request-id layer is on.
    pub request_id: Option<std::sync::Arc<str>>,
}

/// Receives access records; must not block (it runs on the I/O thread).
pub type AccessSink = Arc<dyn Fn(AccessRecord) + Send + Sync>;

/// Everything shared by all connections of one server: immutable after start.
/// Built by [`crate::builder::ServerBuilder`].
pub struct AppState {
    /// The compiled route table (targets are indices into `targets`).
    pub router: Router<usize>,
    /// What each route leads to.
    pub(crate) targets: Vec<RouteEntry>,
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
    /// An outer layer needs the matched route on the response (metrics, tracing, cache).
    pub(crate) observed: bool,
    /// The response cache, when `cache` is set.
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
    /// Per-route circuit breakers, when `circuitBreaker` is set.
    pub breakers: Option<Arc<crate::breaker::Breakers>>,
    /// Buffered request bodies and unsent HTTP/2 response data, all connections.
    pub budgets: Arc<Budgets>,
    /// Authentication gates (JWT, API key, Basic), when configured.
    pub gates: crate::auth::Gates,
    /// The rate limiter, when `rateLimit` is configured.
    pub rate_limit: Option<Arc<crate::ratelimit::RateLimiter>>,
    /// Sessions, when `session` is configured.
    pub sessions: Option<Arc<crate::session::Sessions>>,
    /// CSRF protection, when `csrf` is configured.
    pub csrf: Option<Arc<crate::csrf::Csrf>>,
    /// gRPC on the HTTP port, once the embedding installs it.
    pub grpc: crate::grpc::GrpcSlot,
}

impl AppState {
    /// Build from parts; `config` must already be validated.
    pub(crate) fn new(router: Router<usize>, config: ServerConfig, access: Option<AccessSink>) -> Self {
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
            targets: Vec::new(),
            observed: metrics.is_some() || telemetry.is_some() || config.cache.is_some(),
            gates: crate::auth::Gates::default(),
            rate_limit: None,
            sessions: None,
            csrf: None,
            grpc: crate::grpc::GrpcSlot::default(),
            cache: config
                .cache
                .clone()
                .map(|c| Arc::new(crate::cache::ResponseCache::new(c))),
            breakers: config
                .circuit_breaker
                .clone()
                .map(|c| Arc::new(crate::breaker::Breakers::new(c))),
            config,
            trusted,
            access,
            metrics,
            health,
            telemetry,
            budgets: Arc::default(),
        }
    }

    /// The largest body any route accepts (`limits.max_body_size` or a route's own).
    pub fn max_body_limit(&self) -> u64 {
        self.targets
            .iter()
            .filter_map(|e| e.options.max_body_size)
            .fold(self.config.limits.max_body_size, u64::max)
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
    /// The connection holds one of the probe-reserve slots: it may only ask for probes.
    pub reserved: std::sync::atomic::AtomicBool,
    /// HTTP/2: the stream cap was reached, send GOAWAY (the watchdog acts on it).
    pub goaway: std::sync::atomic::AtomicBool,
    /// HTTP/2: streamed response bodies still open.
    pub streams: AtomicU64,
    /// HTTP/2: response bytes handed to hyper and not yet written to the socket.
    pub unsent: AtomicU64,
    /// Bytes written to the socket so far.
    pub written: AtomicU64,
    /// Wakes the watchdog early (GOAWAY requested). An `AtomicWaker`, not a `Notify`: the
    /// watchdog is polled on every wake-up of the connection's task, and a `Notified`
    /// takes a lock on each poll.
    pub wake: futures_util::task::AtomicWaker,
    /// HTTP/1: the current request's body was dropped with more of it still to come than
    /// is worth reading (see `body::WatchedIncoming`): the response closes the connection.
    pub body_unread: std::sync::atomic::AtomicBool,
    /// HTTP/1: the small rest of a body dropped unread, read before the response head.
    pub leftover: std::sync::Mutex<crate::body::Leftover>,
}

/// Memory budgets shared by all connections of a server (see `LimitsConfig::max_buffered_bytes`
/// and `Http2Config::max_buffered_*`).
#[derive(Default)]
pub struct Budgets {
    /// Request body bytes held in memory right now.
    pub bodies: AtomicU64,
    /// HTTP/2 response bytes handed to hyper and not yet written, all connections.
    pub h2_unsent: AtomicU64,
}

impl Budgets {
    /// Reserve `n` bytes of the body budget `max` (0: unlimited); `None` when it is spent.
    pub fn reserve_body(self: &Arc<Self>, n: u64, max: u64) -> Option<BodyReservation> {
        use std::sync::atomic::Ordering;
        if max == 0 {
            return Some(BodyReservation { budgets: None, n: 0 });
        }
        let prev = self.bodies.fetch_add(n, Ordering::AcqRel);
        if prev.saturating_add(n) > max {
            self.bodies.fetch_sub(n, Ordering::AcqRel);
            return None;
        }
        Some(BodyReservation {
            budgets: Some(self.clone()),
            n,
        })
    }
}

/// Bytes of the body budget held until dropped (the request is answered).
pub struct BodyReservation {
    budgets: Option<Arc<Budgets>>,
    n: u64,
}

impl BodyReservation {
    /// Hold `more` bytes too; `false` (nothing taken) when that would pass `max`.
    pub fn grow(&mut self, more: u64, max: u64) -> bool {
        use std::sync::atomic::Ordering;
        let Some(b) = &self.budgets else { return true };
        let prev = b.bodies.fetch_add(more, Ordering::AcqRel);
        if prev.saturating_add(more) > max {
            b.bodies.fetch_sub(more, Ordering::AcqRel);
            return false;
        }
        self.n += more;
        true
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        if let Some(b) = &self.budgets {
            b.bodies.fetch_sub(self.n, std::sync::atomic::Ordering::AcqRel);
        }
    }
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
    /// The server's memory budgets (sockets only; in-process requests have none).
    pub budgets: Option<Arc<Budgets>>,
    /// The connection's slot, held by an upgraded connection (sockets only).
    pub hold: Option<crate::serve::ConnHold>,
}

impl ConnInfo {
    /// Facts for a fresh connection.
    pub fn new(peer: Option<SocketAddr>, tls: bool) -> Self {
        Self {
            peer,
            tls,
            activity: Arc::default(),
            epoch: std::time::Instant::now(),
            budgets: None,
            hold: None,
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
pub(crate) fn path_is_valid(path: &str) -> bool {
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
