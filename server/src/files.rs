//! Files streamed from disk, with `Range` support (206/416). The file is read in
//! chunks as the client accepts them, never whole.

use std::io::SeekFrom;
use std::path::Path;

use futures_util::TryStreamExt;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::body::ResponseBody;
use crate::problem::problem;

const CHUNK: usize = 64 * 1024;

/// A byte range request resolved against a file length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// No (usable) `Range` header: the whole file.
    Whole,
    /// One satisfiable range, inclusive bounds.
    Partial(u64, u64),
    /// Syntactically valid but not satisfiable, or malformed: 416.
    Unsatisfiable,
}

/// Parse a single-range `bytes=` header (multi-range requests are served whole,
/// which RFC 9110 allows).
pub fn parse_range(header: Option<&str>, len: u64) -> RangeSpec {
    let Some(h) = header.map(str::trim) else {
        return RangeSpec::Whole;
    };
    let Some(spec) = h.strip_prefix("bytes=") else {
        return RangeSpec::Unsatisfiable;
    };
    if spec.contains(',') {
        return RangeSpec::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Unsatisfiable;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = if a.is_empty() {
        // Suffix: the last N bytes.
        match b.parse::<u64>() {
            Ok(0) | Err(_) => None,
            Ok(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
        }
    } else {
        match (a.parse::<u64>(), b) {
            (Ok(start), "") => Some((start, len.saturating_sub(1))),
            (Ok(start), b) => b
                .parse::<u64>()
                .ok()
                .filter(|end| *end >= start)
                .map(|end| (start, end.min(len.saturating_sub(1)))),
            _ => None,
        }
    };
    match parsed {
        Some((start, end)) if len > 0 && start < len && start <= end => RangeSpec::Partial(start, end),
        _ => RangeSpec::Unsatisfiable,
    }
}

/// Build a file response. `range` is the request's `Range` header when ranges are
/// wanted (`Response.file_range`); `None` serves the whole file with `Accept-Ranges`.
pub async fn file_response(
    path: &Path,
    content_type: Option<&str>,
    download_name: Option<&str>,
    range: Option<Option<&str>>,
) -> Response<ResponseBody> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return problem(StatusCode::NOT_FOUND, "file not found");
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open file");
            return problem(StatusCode::INTERNAL_SERVER_ERROR, "cannot open file");
        }
    };
    let meta = match file.metadata().await {
        Ok(m) if m.is_file() => m,
        _ => return problem(StatusCode::NOT_FOUND, "file not found"),
    };
    let len = meta.len();
    let spec = match range {
        Some(h) => parse_range(h, len),
        None => RangeSpec::Whole,
    };
    let (status, start, count) = match spec {
        RangeSpec::Whole => (StatusCode::OK, 0, len),
        RangeSpec::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        RangeSpec::Unsatisfiable => {
            let mut r = problem(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the range is not satisfiable for {len} bytes"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "cannot read file");
    }
    let stream = ReaderStream::with_capacity(file.take(count), CHUNK).map_ok(http_body::Frame::data);
    let body = ResponseBody::Boxed(BodyExt::boxed(StreamBody::new(stream)));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let ct = content_type.map(str::to_owned).unwrap_or_else(|| {
        mime_guess::from_path(path)
            .first_or_octet_stream()
            .essence_str()
            .to_owned()
    });
    if let Ok(v) = HeaderValue::from_str(&ct) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    if let Ok(modified) = meta.modified() {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    if let Some(name) = download_name {
        let ascii: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' && c != '\\' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeSpec::Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), RangeSpec::Partial(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), RangeSpec::Partial(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeSpec::Partial(7, 9));
        assert_eq!(parse_range(Some("bytes=0-100"), 10), RangeSpec::Partial(0, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=x-y"), 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), RangeSpec::Whole);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), RangeSpec::Unsatisfiable);
    }
}
