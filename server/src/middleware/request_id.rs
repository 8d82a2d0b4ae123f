//! Request ids: a valid incoming id (bounded length, safe characters) is kept, anything
//! else is replaced by a fresh UUID v4. The id goes on the request (header and
//! [`RequestId`] extension, for the handler, the access log and the span) and is echoed
//! on the response.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use cello_config::RequestIdConfig;
use http::{HeaderName, HeaderValue};
use tower::Service;

use crate::stack::{Post, Req, Resp, Then};

/// Longest incoming id that is propagated.
pub const MAX_LEN: usize = 128;

/// The request's id (request extension, set by this layer).
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

/// Whether an incoming id is propagated: 1..=[`MAX_LEN`] characters of
/// `A-Z a-z 0-9 - _ . : + / =` (no spaces, quotes or control characters: it lands in logs).
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'='))
}

/// Built once from [`RequestIdConfig`].
pub struct Settings {
    header: HeaderName,
}

impl Settings {
    /// The header name was validated with the config.
    pub fn new(cfg: &RequestIdConfig) -> Option<Self> {
        HeaderName::try_from(cfg.header_name.to_ascii_lowercase())
            .ok()
            .map(|header| Self { header })
    }
}

super::settings_layer!(RequestIdLayer, RequestIdService, Settings);

impl RequestIdLayer {
    /// The layer for `cfg` (`None` for an unusable header name, which `validate` refuses).
    pub fn new(cfg: &RequestIdConfig) -> Option<Self> {
        Settings::new(cfg).map(|s| Self(Arc::new(s)))
    }
}

/// Echo the id on the response.
pub struct EchoId(HeaderName, HeaderValue);

impl Post for EchoId {
    fn post(self, mut resp: Resp) -> Resp {
        resp.headers_mut().insert(self.0, self.1);
        resp
    }
}

impl<S> Service<Req> for RequestIdService<S>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Then<S::Future, EchoId>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut req: Req) -> Self::Future {
        let header = &self.cfg.header;
        let incoming = req
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_valid(v))
            .map(Arc::<str>::from);
        let id = incoming.unwrap_or_else(|| {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
        });
        // Valid ids and UUIDs are visible ASCII: always a valid header value.
        let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        req.headers_mut().insert(header.clone(), value.clone());
        req.extensions_mut().insert(RequestId(id));
        Then::new(self.inner.call(req), EchoId(header.clone(), value))
    }
}
