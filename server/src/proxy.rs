//! The sidecar's endpoint: every routed request is forwarded to an HTTP app on
//! localhost, after the data plane's own limits, timeouts and middleware ran.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::ResponseBody;
use crate::endpoint::{Endpoint, ResponseFuture, RoutedRequest};
use crate::error::{Error, Result};
use crate::health::{CheckResult, ChecksFuture, HealthChecker};
use crate::problem::problem;

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Also whatever `Connection` names.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Forwards to one upstream origin (`http://127.0.0.1:8080`).
pub struct ProxyEndpoint {
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: Uri,
    timeout: Duration,
}

impl ProxyEndpoint {
    /// A proxy to `upstream` (scheme and authority; a path is not allowed).
    pub fn new(upstream: &str, timeout: Duration) -> Result<Self> {
        let uri: Uri = upstream.parse().map_err(|e| Error::Route {
            path: upstream.to_owned(),
            reason: format!("{e}"),
        })?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(Error::Route {
                path: upstream.to_owned(),
                reason: "the upstream must be an http://host:port origin".into(),
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            upstream: uri,
            timeout,
        })
    }

    /// The upstream's socket address (for the readiness check).
    pub fn upstream_addr(&self) -> Result<std::net::SocketAddr> {
        let auth = self.upstream.authority().map_or("", |a| a.as_str());
        let with_port = if self.upstream.port().is_some() {
            auth.to_owned()
        } else {
            format!("{auth}:80")
        };
        std::net::ToSocketAddrs::to_socket_addrs(&with_port)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| Error::Route {
                path: auth.to_owned(),
                reason: "the upstream address does not resolve".into(),
            })
    }

    fn upstream_request(&self, req: RoutedRequest) -> std::result::Result<Request<Full<Bytes>>, http::Error> {
        let path = req.parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.upstream.authority().map_or("127.0.0.1", |a| a.as_str()))
            .path_and_query(path)
            .build()?;
        let host = req.parts.headers.get(header::HOST).cloned();
        let mut headers = req.parts.headers;
        strip_hop_by_hop(&mut headers);
        if let Some(peer) = req.peer {
            let ip = peer.ip().to_string();
            let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip,
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert("x-forwarded-for", v);
            }
        }
        headers.insert(
            "x-forwarded-proto",
            HeaderValue::from_static(if req.tls { "https" } else { "http" }),
        );
        if let Some(host) = host {
            headers.insert("x-forwarded-host", host);
        }
        let mut builder = Request::builder().method(req.parts.method).uri(uri);
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        builder.body(Full::new(req.body))
    }
}

impl Endpoint for ProxyEndpoint {
    fn call(&self, req: RoutedRequest) -> ResponseFuture {
        let request = self.upstream_request(req);
        let client = self.client.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let request = match request {
                Ok(r) => r,
                Err(e) => return problem(StatusCode::BAD_REQUEST, format!("cannot forward this request: {e}")),
            };
            match tokio::time::timeout(timeout, client.request(request)).await {
                Ok(Ok(resp)) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    let body = body.map_err(io::Error::other).boxed();
                    parts.extensions.insert(crate::ext::Upstream);
                    Response::from_parts(parts, ResponseBody::Boxed(body))
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "upstream request failed");
                    problem(StatusCode::BAD_GATEWAY, "the application did not answer")
                }
                Err(_) => problem(StatusCode::GATEWAY_TIMEOUT, "the application did not answer in time"),
            }
        })
    }
}

/// `/health/ready` of the sidecar follows its app: a TCP connect to the upstream,
/// bounded by the probe timeout and reused for a second (probes come often).
pub struct UpstreamCheck {
    addr: std::net::SocketAddr,
    last: Arc<Mutex<Option<(Instant, CheckResult)>>>,
}

impl UpstreamCheck {
    /// Check `addr`.
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            addr,
            last: Arc::default(),
        }
    }
}

/// How long one connect check answers for.
const UPSTREAM_CACHE: Duration = Duration::from_secs(1);

impl HealthChecker for UpstreamCheck {
    fn check(&self, timeout: Duration) -> ChecksFuture {
        let cached = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < UPSTREAM_CACHE)
            .map(|(_, r)| r.clone());
        if let Some(r) = cached {
            return Box::pin(std::future::ready(vec![r]));
        }
        let (addr, last) = (self.addr, self.last.clone());
        let timeout = timeout.min(UPSTREAM_CACHE);
        Box::pin(async move {
            let start = Instant::now();
            let detail = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("the application at {addr} refused the connection: {e}")),
                Err(_) => Some(format!("the application at {addr} did not accept a connection in time")),
            };
            let r = CheckResult {
                name: "upstream".into(),
                healthy: detail.is_none(),
                detail,
                duration_ms: start.elapsed().as_secs_f64() * 1000.0,
            };
            *last.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), r.clone()));
            vec![r]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upstream_must_be_an_http_origin() {
        assert!(ProxyEndpoint::new("http://127.0.0.1:8080", Duration::from_secs(1)).is_ok());
        assert!(ProxyEndpoint::new("https://127.0.0.1:8080", Duration::from_secs(1)).is_err());
        assert!(ProxyEndpoint::new("not a uri", Duration::from_secs(1)).is_err());
    }
}
