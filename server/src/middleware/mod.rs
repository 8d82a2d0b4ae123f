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

/// Add `token` to the response's `Vary` unless it is already listed.
pub(crate) fn vary(resp: &mut Resp, token: &'static str) {
    let listed = resp.headers().get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case(token))
        })
    });
    if !listed {
        resp.headers_mut().append(header::VARY, HeaderValue::from_static(token));
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
