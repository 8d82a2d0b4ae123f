//! Conditional requests (RFC 9110 §13). A 200 answer to GET/HEAD with a buffered body gets
//! a strong `ETag` (a hash of the body) unless it has one; `If-None-Match` (weak comparison)
//! then turns it into a 304 without a body, and so does `If-Modified-Since` against
//! `Last-Modified` when there is no `If-None-Match`. An unsafe method with `If-Match`
//! (strong comparison) or `If-None-Match` is checked against the current representation —
//! what a GET of the same URL answers — and refused with 412 before the handler runs.
//! HEAD is served as a GET here (body dropped) so its validators match GET's.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cello_config::EtagConfig;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body::Body as _;
use tower::{Service, ServiceExt};

use crate::body::{RequestBody, ResponseBody};
use crate::problem::problem;
use crate::stack::{Post, Req, Resp, Then};

/// Built once from [`EtagConfig`].
pub struct Settings {
    max_size: u64,
}

super::settings_layer!(ConditionalLayer, Conditional, Settings);

impl ConditionalLayer {
    /// The layer for `cfg`.
    pub fn new(cfg: &EtagConfig) -> Self {
        Self(Arc::new(Settings {
            max_size: cfg.max_size.unwrap_or(u64::MAX),
        }))
    }
}

/// A strong ETag for `body`: its length and a 64-bit hash, quoted. XXH3 (seed 0) is a
/// specified algorithm, so the tag is the same in every worker, across restarts and
/// releases (std's `DefaultHasher` promises neither), and it is several times cheaper than
/// SipHash on short bodies.
pub fn etag_for(body: &[u8]) -> HeaderValue {
    // `"{len:x}-{hash:016x}"`, written without the formatting machinery.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 2 + 16 + 1 + 16];
    let mut n = 0;
    out[n] = b'"';
    n += 1;
    let len = body.len() as u64;
    let digits = (64 - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out[n] = HEX[((len >> (4 * i)) & 15) as usize];
        n += 1;
    }
    out[n] = b'-';
    n += 1;
    let hash = xxhash_rust::xxh3::xxh3_64(body);
    for i in (0..16).rev() {
        out[n] = HEX[((hash >> (4 * i)) & 15) as usize];
        n += 1;
    }
    out[n] = b'"';
    n += 1;
    HeaderValue::from_bytes(&out[..n]).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// The opaque tags of an `If-Match` / `If-None-Match` value (`None`: `*`).
fn tags(value: &str) -> Option<Vec<(bool, &str)>> {
    if value.trim() == "*" {
        return None;
    }
    Some(
        value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| match t.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, t),
            })
            .collect(),
    )
}

/// Whether `etag` is listed in `value`; `weak` comparison ignores the `W/` flags.
fn listed(value: &str, etag: &str, weak: bool) -> bool {
    let (etag_weak, opaque) = match etag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, etag),
    };
    match tags(value) {
        None => true,
        Some(list) => list.iter().any(|(w, t)| *t == opaque && (weak || (!w && !etag_weak))),
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The request's validators, taken before it moves on.
pub struct Validators {
    if_none_match: Option<String>,
    if_modified_since: Option<std::time::SystemTime>,
    head: bool,
    max_size: u64,
}

fn not_modified(resp: Resp) -> Resp {
    let len = resp
        .body()
        .size_hint()
        .exact()
        .or_else(|| header_str(resp.headers(), &header::CONTENT_LENGTH).and_then(|v| v.parse().ok()));
    let (mut parts, _) = resp.into_parts();
    parts.extensions.insert(super::NotModifiedOf {
        content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
        len,
        encoded: parts.headers.contains_key(header::CONTENT_ENCODING),
    });
    parts.status = StatusCode::NOT_MODIFIED;
    for h in [header::CONTENT_LENGTH, header::CONTENT_TYPE, header::CONTENT_ENCODING] {
        parts.headers.remove(h);
    }
    http::Response::from_parts(parts, ResponseBody::Empty)
}

impl Post for Validators {
    fn post(self, mut resp: Resp) -> Resp {
        if resp.status() == StatusCode::OK && !resp.headers().contains_key(header::ETAG) {
            if let ResponseBody::Full(Some(b)) = resp.body() {
                if (b.len() as u64) <= self.max_size {
                    let tag = etag_for(b);
                    resp.headers_mut().insert(header::ETAG, tag);
                }
            }
        }
        if resp.status() == StatusCode::OK {
            let h = resp.headers();
            let fresh = match (&self.if_none_match, header_str(h, &header::ETAG)) {
                (Some(inm), Some(tag)) => listed(inm, tag, true),
                (Some(_), None) => false,
                (None, _) => match (self.if_modified_since, header_str(h, &header::LAST_MODIFIED)) {
                    (Some(since), Some(lm)) => httpdate::parse_http_date(lm).is_ok_and(|lm| lm <= since),
                    _ => false,
                },
            };
            if fresh {
                return not_modified(resp);
            }
        }
        if self.head {
            // Keep Content-Length as GET would send it, drop the body.
            if let ResponseBody::Full(Some(b)) = resp.body() {
                let len = HeaderValue::from(b.len());
                resp.headers_mut().entry(header::CONTENT_LENGTH).or_insert(len);
            }
            *resp.body_mut() = ResponseBody::Empty;
        }
        resp
    }
}

fn unsafe_method(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Either the common path or the boxed precondition check of an unsafe method.
pub type CondFuture<F> =
    futures_util::future::Either<Then<F, Validators>, Pin<Box<dyn Future<Output = Result<Resp, Infallible>> + Send>>>;

/// The current representation's ETag, from a GET of the same URL (`None`: there is none).
async fn current_etag<S>(svc: S, req: &Req) -> Option<String>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    let mut probe = Request::get(req.uri().clone()).body(RequestBody::empty()).ok()?;
    *probe.version_mut() = req.version();
    *probe.extensions_mut() = req.extensions().clone();
    for (k, v) in req.headers() {
        let skip = k == header::IF_MATCH
            || k == header::IF_NONE_MATCH
            || k == header::CONTENT_LENGTH
            || k == header::CONTENT_TYPE
            || k == header::TRANSFER_ENCODING
            || k == header::ACCEPT_ENCODING
            || k == header::RANGE;
        if !skip {
            probe.headers_mut().append(k, v.clone());
        }
    }
    let Ok(resp) = svc.oneshot(probe).await;
    if !resp.status().is_success() {
        return None;
    }
    if let Some(tag) = header_str(resp.headers(), &header::ETAG) {
        return Some(tag.to_owned());
    }
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .ok()?
        .to_bytes();
    etag_for(&body).to_str().ok().map(str::to_owned)
}

impl<S> Service<Req> for Conditional<S>
where
    S: Service<Req, Response = Resp, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = CondFuture<S::Future>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut req: Req) -> Self::Future {
        let h = req.headers();
        if unsafe_method(req.method()) && (h.contains_key(header::IF_MATCH) || h.contains_key(header::IF_NONE_MATCH)) {
            let svc = self.inner.clone();
            let mut inner = self.inner.clone();
            return futures_util::future::Either::Right(Box::pin(async move {
                let current = current_etag(svc, &req).await;
                let h = req.headers();
                let failed = match (header_str(h, &header::IF_MATCH), &current) {
                    (Some(_), None) => true,
                    (Some(im), Some(tag)) => !listed(im, tag, false),
                    (None, _) => false,
                } || match (header_str(h, &header::IF_NONE_MATCH), &current) {
                    (Some(inm), Some(tag)) => listed(inm, tag, true),
                    _ => false,
                };
                if failed {
                    return Ok(problem(
                        StatusCode::PRECONDITION_FAILED,
                        "the resource does not match the request's preconditions",
                    ));
                }
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                inner.call(req).await
            }));
        }
        let safe = matches!(*req.method(), Method::GET | Method::HEAD);
        let head = req.method() == Method::HEAD;
        let validators = Validators {
            if_none_match: safe
                .then(|| header_str(h, &header::IF_NONE_MATCH).map(str::to_owned))
                .flatten(),
            if_modified_since: safe
                .then(|| header_str(h, &header::IF_MODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v).ok()))
                .flatten(),
            head,
            max_size: self.cfg.max_size,
        };
        if head {
            *req.method_mut() = Method::GET;
        }
        futures_util::future::Either::Left(Then::new(self.inner.call(req), validators))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_length_and_hash_in_hex() {
        for body in [&b""[..], b"a", b"0123456789abcdef0123", &[7u8; 4096]] {
            let want = format!("\"{:x}-{:016x}\"", body.len(), xxhash_rust::xxh3::xxh3_64(body));
            assert_eq!(etag_for(body).to_str().unwrap(), want);
        }
    }

    #[test]
    fn etags_stay_the_same_across_builds() {
        // XXH3-64 of the empty input (the reference value of the specification) and of a
        // JSON body: a change of hash would change every ETag clients hold.
        assert_eq!(etag_for(b"").to_str().unwrap(), "\"0-2d06800538d394c2\"");
        assert_eq!(
            etag_for(br#"{"message":"Hello, World!"}"#).to_str().unwrap(),
            "\"1b-8bdec16cf503e444\""
        );
    }

    #[test]
    fn weak_and_strong_comparison() {
        assert!(listed("\"a\"", "\"a\"", false));
        assert!(listed("W/\"a\"", "\"a\"", true));
        assert!(!listed("W/\"a\"", "\"a\"", false));
        assert!(listed("\"b\", \"a\"", "W/\"a\"", true));
        assert!(!listed("\"b\"", "\"a\"", true));
        assert!(listed("*", "\"a\"", false));
    }
}
