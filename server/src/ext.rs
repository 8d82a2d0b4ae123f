//! Typed request/response extensions: what the layers of the stack tell each other and
//! the endpoint. Each is a small struct; the map is touched once per request (the
//! connection facts), the rest only when the layer that needs them is enabled.

use std::net::IpAddr;
use std::sync::Arc;

use crate::router::Route;
pub use crate::service::ConnInfo;

/// Bytes of the request path that are the app's `root_path` (set by the root-path
/// layer; the router matches the rest).
#[derive(Clone, Copy, Debug)]
pub struct RootPrefix(pub usize);

/// The route a request matched: put on the *response* by the router for the metrics
/// and tracing layer (only when it is on).
#[derive(Clone, Debug)]
pub struct MatchedRoute(pub Arc<Route<usize>>);

/// On a response proxied from the sidecar's upstream: streamed, but a complete answer the
/// response cache may store while it passes (up to `maxEntryBytes`).
#[derive(Clone, Copy, Debug)]
pub struct Upstream;

/// Trace and span id of the request's server span (on the response, for the access log).
#[derive(Clone, Debug)]
pub struct TraceIds(pub String, pub String);

/// The client as the trusted-proxy layer resolved it from `Forwarded` /
/// `X-Forwarded-*` (only present when `trusted_proxies` is set and the peer is one).
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// The original client address.
    pub ip: IpAddr,
    /// `http` or `https` as the client used, when a proxy said.
    pub scheme: Option<&'static str>,
    /// The host the client asked for, when a proxy said.
    pub host: Option<String>,
}

/// A per-route body limit (bytes), set by a route's own stack; overrides
/// `limits.max_body_size` for that route.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub u64);
