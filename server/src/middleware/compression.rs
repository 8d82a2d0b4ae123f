//! Response compression: br, zstd and gzip, chosen by the request's `Accept-Encoding`
//! q-values (`q=0` refuses a coding, `*` covers the unnamed ones, ties go to the server's
//! order; nothing acceptable → identity). Skipped for bodies known to be under `min_size`,
//! already-encoded bodies, `text/event-stream`, ranges (`Range` / `Content-Range`), 1xx /
//! 204 / 304, `Cache-Control: no-transform` and incompressible types (images other than
//! SVG, audio, video, archives, fonts in compressed formats). A buffered body is compressed
//! at once; a streamed body frame by frame, each frame flushed so the client sees it when
//! the handler yields it. A compressed response says `Vary: Accept-Encoding`, loses
//! `Content-Length` / `Accept-Ranges`, and a strong `ETag` becomes weak.

use std::convert::Infallible;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cello_config::CompressionConfig;
use http::{header, HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tower::Service;

use super::vary;
use crate::body::ResponseBody;
use crate::stack::{Post, Req, Resp, Then};

/// A content coding this layer can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// Brotli.
    Br,
    /// Zstandard.
    Zstd,
    /// gzip.
    Gzip,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Self::Br => "br",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }
}

/// The coding to use for `accept` (an `Accept-Encoding` value), from `offered` in the
/// server's order of preference.
pub fn negotiate(accept: &str, offered: &[Coding]) -> Option<Coding> {
    let mut star = None;
    let mut named: Vec<(String, f32)> = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if coding.is_empty() {
            continue;
        }
        let mut q = 1.0f32;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v
                        .trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .unwrap_or(0.0);
                }
            }
        }
        if coding == "*" {
            star = Some(q);
        } else {
            // `x-gzip` is gzip (RFC 9110 §8.4.1.3).
            let coding = if coding == "x-gzip" { "gzip".to_owned() } else { coding };
            named.push((coding, q));
        }
    }
    let q_of = |c: Coding| {
        named
            .iter()
            .find(|(n, _)| n == c.name())
            .map(|(_, q)| *q)
            .or(star)
            .unwrap_or(0.0)
    };
    let mut best: Option<(Coding, f32)> = None;
    for &c in offered {
        let q = q_of(c);
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((c, q));
        }
    }
    best.map(|(c, _)| c)
}

/// Media types that are already compressed (or stream events that must not be buffered).
fn incompressible(content_type: &str) -> bool {
    // Compared in place, ignoring case (no lower-cased copy per response).
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let is = |t: &str| ct.eq_ignore_ascii_case(t);
    let starts = |p: &str| ct.len() >= p.len() && ct.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    if is("image/svg+xml") || is("image/bmp") || is("image/x-icon") {
        return false;
    }
    starts("image/")
        || starts("audio/")
        || starts("video/")
        || is("text/event-stream")
        || starts("application/grpc")
        || [
            "application/zip",
            "application/gzip",
            "application/x-gzip",
            "application/x-bzip2",
            "application/x-xz",
            "application/x-7z-compressed",
            "application/x-rar-compressed",
            "application/vnd.rar",
            "application/zstd",
            "application/x-zstd",
            "application/x-brotli",
            "application/octet-stream",
            "application/pdf",
            "application/wasm",
            "font/woff",
            "font/woff2",
        ]
        .iter()
        .any(|t| is(t))
}

/// Built once from [`CompressionConfig`].
pub struct Settings {
    offered: Vec<Coding>,
    min_size: u64,
    level: Option<u32>,
}

impl Settings {
    /// From a validated `cfg`.
    pub fn new(cfg: &CompressionConfig) -> Self {
        let offered = cfg
            .algorithms
            .iter()
            .filter_map(|a| match a.as_str() {
                "br" => Some(Coding::Br),
                "zstd" => Some(Coding::Zstd),
                "gzip" => Some(Coding::Gzip),
                _ => None,
            })
            .collect();
        Self {
            offered,
            min_size: cfg.min_size,
            level: cfg.level,
        }
    }
}

super::settings_layer!(CompressionLayer, Compression, Settings);

impl CompressionLayer {
    /// The layer for a validated `cfg`.
    pub fn new(cfg: &CompressionConfig) -> Self {
        Self(Arc::new(Settings::new(cfg)))
    }
}

/// A streaming encoder writing into a buffer this module drains.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(coding: Coding, level: Option<u32>) -> io::Result<Self> {
        Ok(match coding {
            Coding::Gzip => Self::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.unwrap_or(6).min(9)),
            )),
            // Brotli's own default (11) is far too slow for responses; 4 is its sweet spot.
            Coding::Br => Self::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                level.unwrap_or(4).min(11),
                22,
            ))),
            Coding::Zstd => Self::Zstd(zstd::stream::write::Encoder::new(
                Vec::new(),
                i32::try_from(level.unwrap_or(3).clamp(1, 22)).unwrap_or(3),
            )?),
        })
    }

    fn out(&mut self) -> &mut Vec<u8> {
        match self {
            Self::Gzip(e) => e.get_mut(),
            Self::Br(e) => e.get_mut(),
            Self::Zstd(e) => e.get_mut(),
        }
    }

    /// Compress `data` and flush, returning what is ready to send.
    fn chunk(&mut self, data: &[u8]) -> io::Result<Bytes> {
        match self {
            Self::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
            }
            Self::Br(e) => {
                e.write_all(data)?;
                e.flush()?;
            }
            Self::Zstd(e) => {
                e.write_all(data)?;
                e.flush()?;
            }
        }
        Ok(Bytes::from(std::mem::take(self.out())))
    }

    /// Write `data` without flushing (a whole buffered body).
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Self::Gzip(e) => e.write_all(data),
            Self::Br(e) => e.write_all(data),
            Self::Zstd(e) => e.write_all(data),
        }
    }

    fn finish(self) -> io::Result<Bytes> {
        Ok(Bytes::from(match self {
            Self::Gzip(e) => e.finish()?,
            Self::Br(e) => e.into_inner(),
            Self::Zstd(e) => e.finish()?,
        }))
    }
}

/// A body compressed frame by frame.
struct Compressed {
    inner: ResponseBody,
    encoder: Option<Encoder>,
    trailers: Option<http::HeaderMap>,
}

impl Body for Compressed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            if this.encoder.is_none() {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let Some(enc) = this.encoder.as_mut() else { continue };
                        let out = enc.chunk(&data)?;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => this.trailers = frame.into_trailers().ok(),
                },
                Poll::Ready(None) => {
                    let Some(enc) = this.encoder.take() else { continue };
                    let out = enc.finish()?;
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Decides on the response and swaps its body.
pub struct CompressPost {
    cfg: Arc<Settings>,
    coding: Option<Coding>,
    /// HEAD, or a range request: never compressed.
    skip: bool,
}

impl CompressPost {
    /// Whether the response could be compressed at all (then it varies on Accept-Encoding).
    fn eligible(resp: &Resp) -> bool {
        let s = resp.status();
        let h = resp.headers();
        !(s.is_informational()
            || s == StatusCode::NO_CONTENT
            || s == StatusCode::NOT_MODIFIED
            || s == StatusCode::PARTIAL_CONTENT
            || h.contains_key(header::CONTENT_ENCODING)
            || h.contains_key(header::CONTENT_RANGE)
            || h.get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("no-transform"))
            || h.get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(incompressible))
    }

    fn known_size(resp: &Resp) -> Option<u64> {
        resp.body().size_hint().exact().or_else(|| {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        })
    }
}

/// Turn a strong `ETag` into a weak one: the bytes differ from the identity representation.
fn weaken_etag(h: &mut http::HeaderMap) {
    if let Some(tag) = h.get(header::ETAG).and_then(|v| v.to_str().ok()) {
        if tag.starts_with('"') {
            if let Ok(weak) = HeaderValue::from_str(&format!("W/{tag}")) {
                h.insert(header::ETAG, weak);
            }
        }
    }
}

impl CompressPost {
    /// A 304 gets the `Vary` and weak `ETag` of the 200 it stands for, when that 200 would
    /// have been compressed for this request.
    fn not_modified(&self, mut resp: Resp) -> Resp {
        let Some(of) = resp.extensions().get::<super::NotModifiedOf>().cloned() else {
            return resp;
        };
        let no_transform = resp
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("no-transform"));
        let typed_ok = !of
            .content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(incompressible);
        if self.skip || of.encoded || no_transform || !typed_ok {
            return resp;
        }
        vary(&mut resp, "Accept-Encoding");
        if self.coding.is_some() && of.len.is_none_or(|n| n >= self.cfg.min_size.max(1)) {
            weaken_etag(resp.headers_mut());
        }
        resp
    }
}

impl Post for CompressPost {
    fn post(self, mut resp: Resp) -> Resp {
        if resp.status() == StatusCode::NOT_MODIFIED {
            return self.not_modified(resp);
        }
        if self.skip || !Self::eligible(&resp) {
            return resp;
        }
        vary(&mut resp, "Accept-Encoding");
        let Some(coding) = self.coding else { return resp };
        if Self::known_size(&resp).is_some_and(|n| n < self.cfg.min_size.max(1)) {
            return resp;
        }
        let Ok(mut enc) = Encoder::new(coding, self.cfg.level) else {
            return resp;
        };
        let body = std::mem::replace(resp.body_mut(), ResponseBody::Empty);
        let body = match body {
            ResponseBody::Full(Some(b)) => {
                match enc.write(&b).and_then(|()| enc.finish()) {
                    Ok(out) => ResponseBody::Full(Some(out)),
                    // A codec failure on a buffer: send it as it was.
                    Err(_) => {
                        *resp.body_mut() = ResponseBody::Full(Some(b));
                        return resp;
                    }
                }
            }
            ResponseBody::Full(None) | ResponseBody::Empty => {
                *resp.body_mut() = body;
                return resp;
            }
            streamed => ResponseBody::Boxed(http_body_util::combinators::BoxBody::new(Compressed {
                inner: streamed,
                encoder: Some(enc),
                trailers: None,
            })),
        };
        *resp.body_mut() = body;
        let h = resp.headers_mut();
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::ACCEPT_RANGES);
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.name()));
        // The bytes differ from the identity representation: a strong validator would lie.
        weaken_etag(h);
        resp
    }
}

impl<S> Service<Req> for Compression<S>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Then<S::Future, CompressPost>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        let coding = req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| negotiate(v, &self.cfg.offered));
        let skip = req.method() == Method::HEAD || req.headers().contains_key(header::RANGE);
        let post = CompressPost {
            cfg: self.cfg.clone(),
            coding,
            skip,
        };
        Then::new(self.inner.call(req), post)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    #[test]
    fn incompressible_types_ignore_case_and_parameters() {
        assert!(incompressible("Image/PNG"));
        assert!(incompressible(" application/ZIP ; x=1"));
        assert!(incompressible("text/event-stream; charset=utf-8"));
        assert!(incompressible("application/grpc+proto"));
        assert!(!incompressible("image/SVG+xml"));
        assert!(!incompressible("application/json"));
        assert!(!incompressible("text/html; charset=utf-8"));
        assert!(!incompressible("font/woff3"));
    }

    #[test]
    fn q_values_pick_the_coding() {
        assert_eq!(negotiate("gzip, br", &ALL), Some(Coding::Br));
        assert_eq!(negotiate("gzip;q=1, br;q=0.5", &ALL), Some(Coding::Gzip));
        assert_eq!(negotiate("br;q=0, gzip", &ALL), Some(Coding::Gzip));
        assert_eq!(negotiate("identity", &ALL), None);
        assert_eq!(negotiate("*;q=0", &ALL), None);
        assert_eq!(negotiate("*", &ALL), Some(Coding::Br));
        assert_eq!(negotiate("zstd;q=0.9, *;q=0.1", &ALL), Some(Coding::Zstd));
        assert_eq!(negotiate("x-gzip", &ALL), Some(Coding::Gzip));
        assert_eq!(negotiate("br", &[Coding::Gzip]), None);
        assert_eq!(negotiate("GZIP ; Q=0.5", &ALL), Some(Coding::Gzip));
    }

    #[test]
    fn encoders_round_trip_streamed_chunks() {
        use std::io::Read;
        for c in ALL {
            let mut enc = Encoder::new(c, None).unwrap();
            let mut out = Vec::new();
            out.extend_from_slice(&enc.chunk(b"hello ").unwrap());
            assert!(!out.is_empty(), "{c:?} flushes each chunk");
            out.extend_from_slice(&enc.chunk(b"world").unwrap());
            out.extend_from_slice(&enc.finish().unwrap());
            let mut plain = Vec::new();
            match c {
                Coding::Gzip => {
                    flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut plain).unwrap();
                }
                Coding::Br => {
                    brotli::Decompressor::new(&out[..], 4096)
                        .read_to_end(&mut plain)
                        .unwrap();
                }
                Coding::Zstd => plain = zstd::stream::decode_all(&out[..]).unwrap(),
            }
            assert_eq!(plain, b"hello world");
        }
    }
}
