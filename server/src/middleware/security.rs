//! Security response headers and the Content-Security-Policy. Headers are computed once;
//! a header the handler set itself is left alone (a route can override). When the CSP
//! uses the `'nonce'` placeholder, each request gets a fresh nonce: on the request as
//! [`CspNonce`] (Python: `request.csp_nonce()`) and in that response's CSP header.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cello_config::{SecurityHeadersConfig, CSP_NONCE};
use http::header::Entry;
use http::{HeaderName, HeaderValue};
use tower::Service;

use crate::stack::{Post, Req, Resp, Then};

/// The request's CSP nonce (request extension, when the CSP asks for one).
#[derive(Clone, Debug)]
pub struct CspNonce(pub Arc<str>);

const CSP: HeaderName = HeaderName::from_static("content-security-policy");

/// Built once from [`SecurityHeadersConfig`].
pub struct Settings {
    /// The configured headers, built once; added to a response as one block.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// A CSP with the nonce placeholder: its text split at the placeholder, built once;
    /// each request's value is the pieces joined by `'nonce-…'`.
    nonce_csp: Option<Vec<String>>,
}

impl Settings {
    /// The headers of a validated `cfg`, in a fixed order.
    pub fn new(cfg: &SecurityHeadersConfig) -> Self {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        if let Some(v) = &cfg.x_frame_options {
            out.push(("x-frame-options", v.clone()));
        }
        if cfg.x_content_type_options {
            out.push(("x-content-type-options", "nosniff".into()));
        }
        if let Some(v) = &cfg.x_xss_protection {
            out.push(("x-xss-protection", v.clone()));
        }
        if let Some(v) = &cfg.referrer_policy {
            out.push(("referrer-policy", v.clone()));
        }
        if let Some(age) = cfg.hsts_max_age {
            let mut v = format!("max-age={age}");
            if cfg.hsts_include_subdomains {
                v.push_str("; includeSubDomains");
            }
            if cfg.hsts_preload {
                v.push_str("; preload");
            }
            out.push(("strict-transport-security", v));
        }
        for (name, v) in [
            ("permissions-policy", &cfg.permissions_policy),
            ("cross-origin-opener-policy", &cfg.cross_origin_opener_policy),
            ("cross-origin-embedder-policy", &cfg.cross_origin_embedder_policy),
            ("cross-origin-resource-policy", &cfg.cross_origin_resource_policy),
        ] {
            if let Some(v) = v {
                out.push((name, v.clone()));
            }
        }
        let mut nonce_csp = None;
        if let Some(csp) = cfg.csp.as_ref().filter(|c| !c.directives.is_empty()) {
            if csp.has_nonce() {
                nonce_csp = Some(csp.build().split(CSP_NONCE).map(str::to_owned).collect());
            } else {
                out.push(("content-security-policy", csp.build()));
            }
        }
        let headers = out
            .into_iter()
            .filter_map(|(n, v)| Some((HeaderName::from_static(n), HeaderValue::from_str(&v).ok()?)))
            .collect();
        Self { headers, nonce_csp }
    }
}

super::settings_layer!(SecurityHeadersLayer, SecurityHeaders, Settings);

impl SecurityHeadersLayer {
    /// The layer for a validated `cfg`.
    pub fn new(cfg: &SecurityHeadersConfig) -> Self {
        Self(Arc::new(Settings::new(cfg)))
    }
}

/// Adds the headers the response does not have yet.
pub struct SecurityPost {
    cfg: Arc<Settings>,
    csp: Option<HeaderValue>,
}

impl Post for SecurityPost {
    fn post(self, mut resp: Resp) -> Resp {
        let h = resp.headers_mut();
        // Room for the block, the CSP and the outer layers' few (CORS, request id) at once:
        // the map grows once here instead of at each doubling on the way.
        h.reserve(self.cfg.headers.len() + 4);
        for (name, value) in &self.cfg.headers {
            // One lookup per header; a handler's own value stays.
            if let Entry::Vacant(e) = h.entry(name) {
                e.insert(value.clone());
            }
        }
        if let Some(csp) = self.csp {
            h.entry(CSP).or_insert(csp);
        }
        resp
    }
}

/// A fresh nonce: 128 random bits, base64 without padding (CSP `base64-value`).
fn nonce() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

impl<S> Service<Req> for SecurityHeaders<S>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Then<S::Future, SecurityPost>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut req: Req) -> Self::Future {
        let csp = self.cfg.nonce_csp.as_ref().and_then(|pieces| {
            let n = nonce();
            // What `CspConfig::build_with_nonce` gives, without rebuilding the policy: the
            // pieces joined by `'nonce-…'` in one buffer that becomes the header value
            // (`format!`, `join` and the copy into the value were ~1k instructions).
            let source_len = "'nonce-'".len() + n.len();
            let len = pieces.iter().map(String::len).sum::<usize>() + source_len * pieces.len().saturating_sub(1);
            let mut v = Vec::with_capacity(len);
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    v.extend_from_slice(b"'nonce-");
                    v.extend_from_slice(n.as_bytes());
                    v.push(b'\'');
                }
                v.extend_from_slice(piece.as_bytes());
            }
            let value = HeaderValue::from_maybe_shared(Bytes::from(v)).ok();
            req.extensions_mut().insert(CspNonce(Arc::from(n)));
            value
        });
        let post = SecurityPost {
            cfg: self.cfg.clone(),
            csp,
        };
        Then::new(self.inner.call(req), post)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_fresh_base64() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/'));
    }

    #[test]
    fn the_block_fills_in_what_the_response_lacks_and_its_own_values_win() {
        let settings = Arc::new(Settings::new(&SecurityHeadersConfig::default()));
        assert!(settings.headers.len() >= 3, "the defaults set several headers");
        let mut resp = Resp::new(crate::body::ResponseBody::Empty);
        let h = resp.headers_mut();
        h.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        let out = SecurityPost {
            cfg: settings.clone(),
            csp: Some(HeaderValue::from_static("default-src 'self'")),
        }
        .post(resp);
        let h = out.headers();
        let all = |n: &str| h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(all("x-frame-options"), ["SAMEORIGIN"]);
        assert_eq!(all("set-cookie"), ["a=1", "b=2"]);
        assert_eq!(all("content-security-policy"), ["default-src 'self'"]);
        for (name, value) in &settings.headers {
            if name != "x-frame-options" {
                assert_eq!(h.get_all(name).iter().collect::<Vec<_>>(), [value], "{name}");
            }
        }
    }
}
