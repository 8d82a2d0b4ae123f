//! The edge middleware of issue 10, one module per layer. Each layer is built once from
//! its `ServerConfig` section (present: on) and placed by [`crate::stack::build`], which
//! owns the order.
//!
//! - [`request_id`]: propagate or generate a request id (`X-Request-ID`).
//! - [`cors`]: preflight answered here, CORS headers on every response (errors too).
//! - [`security`]: security headers and a CSP with a per-request nonce.
//! - [`compression`]: br / zstd / gzip by `Accept-Encoding`, streamed bodies as they stream.
//! - [`conditional`]: ETags, `If-None-Match` / `If-Modified-Since` → 304, `If-Match` → 412.

pub mod compression;
pub mod conditional;
pub mod cors;
pub mod request_id;
pub mod security;

use http::{header, HeaderValue};

use crate::stack::Resp;

/// Set on a 304 by whoever made it (the conditional layer, static files): what the 200 it
/// stands for would have carried, so compression (outside) gives the 304 the same `ETag`
/// and `Vary` that 200 gets (RFC 9110 §15.4.5) — a client that stored `W/"…"` from a
/// compressed 200 must not be told the tag is now strong.
#[derive(Clone, Debug, Default)]
pub struct NotModifiedOf {
    /// The 200's `Content-Type`.
    pub content_type: Option<HeaderValue>,
    /// The 200's body size when known (`None`: streamed).
    pub len: Option<u64>,
    /// The 200 already had a `Content-Encoding` (a precompressed file).
    pub encoded: bool,
}

/// Add `token` to the response's `Vary` unless it is already listed. One lookup of the
/// `Vary` entry, tokens compared on the bytes (no UTF-8 check, no `str` splitting), and an
/// `Accept-Encoding` already there becomes one combined static value instead of a second
/// field line (which would allocate the map's extra-values list).
pub(crate) fn vary(resp: &mut Resp, token: &'static str) {
    use http::header::Entry;
    match resp.headers_mut().entry(header::VARY) {
        Entry::Vacant(e) => {
            e.insert(HeaderValue::from_static(token));
        }
        Entry::Occupied(mut e) => {
            if e.iter().any(|v| lists(v.as_bytes(), token)) {
                return;
            }
            let mut values = e.iter();
            let only = values.next().filter(|_| values.next().is_none());
            match only.and_then(|v| combined(v.as_bytes(), token)) {
                Some(both) => {
                    e.insert(HeaderValue::from_static(both));
                }
                None => e.append(HeaderValue::from_static(token)),
            }
        }
    }
}

/// `value` (a `Vary` field value) lists `token` or `*`.
fn lists(value: &[u8], token: &str) -> bool {
    let is = |t: &[u8]| {
        let t = t.trim_ascii();
        t == b"*" || t.eq_ignore_ascii_case(token.as_bytes())
    };
    // Most values are one token: no splitting then.
    if memchr::memchr(b',', value).is_none() {
        return is(value);
    }
    value.split(|&b| b == b',').any(is)
}

/// The one value for the `Vary` tokens the edge layers add together (compression inside
/// CORS: `Accept-Encoding`, then `Origin`).
fn combined(existing: &[u8], token: &str) -> Option<&'static str> {
    match (existing, token) {
        (b"Accept-Encoding", "Origin") => Some("Accept-Encoding, Origin"),
        (b"Origin", "Accept-Encoding") => Some("Origin, Accept-Encoding"),
        _ => None,
    }
}

/// Implement `Layer` for `$layer(Arc<$settings>)`, producing `$svc { inner, cfg }`.
macro_rules! settings_layer {
    ($layer:ident, $svc:ident, $settings:ty) => {
        #[doc = concat!("The layer of [`", stringify!($svc), "`].")]
        #[derive(Clone)]
        pub struct $layer(pub(crate) std::sync::Arc<$settings>);

        impl<S> tower::Layer<S> for $layer {
            type Service = $svc<S>;
            fn layer(&self, inner: S) -> $svc<S> {
                $svc {
                    inner,
                    cfg: self.0.clone(),
                }
            }
        }

        #[doc = concat!("The service of [`", stringify!($layer), "`].")]
        #[derive(Clone)]
        pub struct $svc<S> {
            inner: S,
            cfg: std::sync::Arc<$settings>,
        }
    };
}
pub(crate) use settings_layer;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::ResponseBody;

    fn varies(start: &[&'static str], tokens: &[&'static str]) -> Vec<String> {
        let mut resp = Resp::new(ResponseBody::Empty);
        for v in start {
            resp.headers_mut().append(header::VARY, HeaderValue::from_static(v));
        }
        for t in tokens {
            vary(&mut resp, t);
        }
        resp.headers()
            .get_all(header::VARY)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn vary_adds_each_token_once() {
        assert_eq!(varies(&[], &["Origin"]), ["Origin"]);
        // Compression (inner) then CORS: one combined value, in that order.
        assert_eq!(varies(&[], &["Accept-Encoding", "Origin"]), ["Accept-Encoding, Origin"]);
        assert_eq!(varies(&[], &["Origin", "Accept-Encoding"]), ["Origin, Accept-Encoding"]);
        assert_eq!(
            varies(&[], &["Accept-Encoding", "Origin", "Accept-Encoding", "Origin"]),
            ["Accept-Encoding, Origin"]
        );
        // Already listed (any case, any place, or `*`): unchanged.
        assert_eq!(
            varies(&["accept-language, origin"], &["Origin"]),
            ["accept-language, origin"]
        );
        assert_eq!(varies(&["*"], &["Accept-Encoding"]), ["*"]);
        assert_eq!(varies(&["Cookie", " ORIGIN "], &["Origin"]), ["Cookie", " ORIGIN "]);
        // Another value there: a second field line.
        assert_eq!(varies(&["Accept-Language"], &["Origin"]), ["Accept-Language", "Origin"]);
    }
}
