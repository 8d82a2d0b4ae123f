//! CORS. A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
//! allowed origin is answered here with 204 — no route, no Python. Other responses from an
//! allowed origin get `Access-Control-Allow-Origin` (and credentials / exposed headers);
//! since the layer sits outside the router, auth, rate limit and cache, that includes
//! framework errors and cache hits. A disallowed origin gets no CORS headers. Every
//! response carries `Vary: Origin`. A gRPC-Web answer also exposes gRPC's status headers
//! (`grpc-status`, `grpc-message`, `grpc-status-details-bin`): a browser client reads them.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use cello_config::CorsConfig;
use futures_util::future::{Either, Ready};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use tower::Service;

use super::vary;
use crate::body::ResponseBody;
use crate::stack::{Post, Req, Resp, Then};

/// One entry of `origins`.
enum Origin {
    Any,
    Exact(String),
    /// `https://*.example.com`: the `*` stands for one or more host labels.
    Pattern {
        prefix: String,
        suffix: String,
    },
}

impl Origin {
    fn parse(s: &str) -> Self {
        if s == "*" {
            return Self::Any;
        }
        let s = s.to_ascii_lowercase();
        match s.split_once('*') {
            Some((prefix, suffix)) => Self::Pattern {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
            },
            None => Self::Exact(s),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(e) => e.eq_ignore_ascii_case(origin),
            Self::Pattern { prefix, suffix } => {
                let o = origin.to_ascii_lowercase();
                let Some(mid) = o
                    .strip_prefix(prefix.as_str())
                    .and_then(|r| r.strip_suffix(suffix.as_str()))
                else {
                    return false;
                };
                // Host labels only: no port, path, user info or empty label can hide in `*`.
                !mid.is_empty()
                    && !mid.starts_with('.')
                    && !mid.ends_with('.')
                    && !mid.contains("..")
                    && mid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }
        }
    }
}

/// Built once from [`CorsConfig`].
pub struct Settings {
    origins: Vec<Origin>,
    any: bool,
    credentials: bool,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    /// `expose` and gRPC's status headers, for gRPC-Web answers.
    expose_grpc: HeaderValue,
    max_age: Option<HeaderValue>,
}

/// The response headers a gRPC-Web client must read.
const GRPC_EXPOSE: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

fn joined(list: &[String]) -> Option<HeaderValue> {
    (!list.is_empty())
        .then(|| HeaderValue::from_str(&list.join(", ")).ok())
        .flatten()
}

impl Settings {
    /// `cfg` was validated (tokens, no `*` with credentials).
    pub fn new(cfg: &CorsConfig) -> Self {
        let methods: Vec<String> = cfg.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        let mut expose_grpc = cfg.expose_headers.clone();
        for h in GRPC_EXPOSE {
            if !expose_grpc.iter().any(|e| e.eq_ignore_ascii_case(h)) {
                expose_grpc.push(h.to_owned());
            }
        }
        Self {
            any: cfg.origins.iter().any(|o| o == "*"),
            origins: cfg.origins.iter().map(|o| Origin::parse(o)).collect(),
            credentials: cfg.credentials,
            methods: joined(&methods).unwrap_or_else(|| HeaderValue::from_static("GET, HEAD, POST")),
            headers: joined(&cfg.headers),
            expose: joined(&cfg.expose_headers),
            expose_grpc: joined(&expose_grpc).unwrap_or_else(|| HeaderValue::from_static("grpc-status")),
            max_age: cfg.max_age.map(HeaderValue::from),
        }
    }

    fn allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.matches(origin))
    }

    /// `Access-Control-Allow-Origin` for an allowed `origin`.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    fn preflight(&self, origin: &HeaderValue, req_headers: &HeaderMap) -> Resp {
        let mut resp = Response::new(ResponseBody::Empty);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        let asked = req_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        if let Some(allow) = self.headers.clone().or(asked) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow);
        }
        if let Some(age) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        h.insert(
            header::VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        resp
    }
}

super::settings_layer!(CorsLayer, Cors, Settings);

impl CorsLayer {
    /// The layer for a validated `cfg`.
    pub fn new(cfg: &CorsConfig) -> Self {
        Self(Arc::new(Settings::new(cfg)))
    }
}

/// CORS headers on the inner service's answer.
pub struct CorsPost {
    cfg: Arc<Settings>,
    /// The request's `Origin`, when allowed.
    origin: Option<HeaderValue>,
}

impl Post for CorsPost {
    fn post(self, mut resp: Resp) -> Resp {
        if let Some(origin) = &self.origin {
            let allow = self.cfg.allow_origin(origin);
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            if self.cfg.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            let grpc_web = h
                .get(header::CONTENT_TYPE)
                .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc-web"));
            if grpc_web {
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, self.cfg.expose_grpc.clone());
            } else if let Some(expose) = &self.cfg.expose {
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
        vary(&mut resp, "Origin");
        resp
    }
}

impl<S> Service<Req> for Cors<S>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Either<Ready<Result<Resp, Infallible>>, Then<S::Future, CorsPost>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .filter(|o| o.to_str().is_ok_and(|o| self.cfg.allowed(o)))
            .cloned();
        if let Some(o) = &origin {
            if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
                return Either::Left(futures_util::future::ready(Ok(self.cfg.preflight(o, req.headers()))));
            }
        }
        let post = CorsPost {
            cfg: self.cfg.clone(),
            origin,
        };
        Either::Right(Then::new(self.inner.call(req), post))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_subdomains_only() {
        let p = Origin::parse("https://*.example.com");
        assert!(p.matches("https://a.example.com"));
        assert!(p.matches("https://A.b.Example.com"));
        assert!(!p.matches("https://example.com"));
        assert!(!p.matches("http://a.example.com"));
        assert!(!p.matches("https://a.example.com.evil.net"));
        assert!(!p.matches("https://evil.net/.example.com"));
        assert!(!p.matches("https://a.example.com:8443"));
        assert!(!p.matches("https://x@a.example.com"));
        let e = Origin::parse("https://app.example.com:8443");
        assert!(e.matches("https://app.example.com:8443"));
        assert!(!e.matches("https://app.example.com"));
    }
}
