//! Files streamed from disk, with `Range` support (206/416). The file is read in
//! chunks as the client accepts them, never whole.
//!
//! Only regular files are served: the path is `stat`ed before it is opened (a FIFO
//! or a device is never opened: opening either can block or have side effects), it
//! is opened with `O_NONBLOCK`, and `fstat` after the open must show the same
//! regular file. Every blocking file operation (open, each chunk read) runs on the
//! blocking pool under a process-wide cap of [`MAX_BLOCKING`] and a timeout of
//! [`IO_TIMEOUT`], so a stuck file system or one route cannot take every blocking
//! thread, and a stuck read ends its response instead of hanging it.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::Semaphore;

use crate::body::ResponseBody;
use crate::problem::problem;

const CHUNK: usize = 64 * 1024;
/// Blocking file operations in flight at once, all routes together (tokio's pool
/// has 512 threads; the rest stay for everything else).
pub const MAX_BLOCKING: usize = 64;
/// Longest wait for one file operation, or for a free slot to start it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

static SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(MAX_BLOCKING)));

/// Run `op` on the blocking pool holding one of the [`MAX_BLOCKING`] slots; the
/// slot is given back only when `op` really returns, so stuck operations keep
/// counting against the cap after their caller timed out.
/// Gives up with `ResourceBusy` (no slot) or `TimedOut` (`op` too slow).
pub(crate) async fn blocking<R: Send + 'static>(op: impl FnOnce() -> io::Result<R> + Send + 'static) -> io::Result<R> {
    blocking_within(IO_TIMEOUT, op).await
}

async fn blocking_within<R: Send + 'static>(
    limit: Duration,
    op: impl FnOnce() -> io::Result<R> + Send + 'static,
) -> io::Result<R> {
    let busy = || io::Error::new(io::ErrorKind::ResourceBusy, "too many file operations in flight");
    let permit = tokio::time::timeout(limit, SLOTS.clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let task = tokio::task::spawn_blocking(move || {
        let _slot = permit;
        op()
    });
    match tokio::time::timeout(limit, task).await {
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "file operation timed out")),
        Ok(Err(join)) => Err(io::Error::other(join)),
        Ok(Ok(r)) => r,
    }
}

/// Open `path` only if it is a regular file (see the module docs).
fn open_regular(path: &Path) -> io::Result<Option<(File, std::fs::Metadata)>> {
    let before = std::fs::metadata(path)?;
    if !before.is_file() {
        return Ok(None);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    // Replaced by something else between the stat and the open: refuse.
    if !meta.is_file() || meta.dev() != before.dev() || meta.ino() != before.ino() {
        return Ok(None);
    }
    Ok(Some((file, meta)))
}

/// The bytes `[start, start + count)` of `file`, read chunk by chunk on demand.
fn chunks(
    file: Arc<File>,
    start: u64,
    count: u64,
) -> impl futures_util::Stream<Item = io::Result<http_body::Frame<Bytes>>> + Send {
    futures_util::stream::try_unfold((file, start, count), |(file, pos, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        let reader = file.clone();
        let buf = blocking(move || {
            let mut buf = vec![0u8; want];
            let n = reader.read_at(&mut buf, pos)?;
            buf.truncate(n);
            Ok(buf)
        })
        .await?;
        if buf.is_empty() {
            // The file shrank under us: end with an error, not a short "complete" body.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = buf.len() as u64;
        Ok(Some((
            http_body::Frame::data(Bytes::from(buf)),
            (file, pos + n, left - n),
        )))
    })
}

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
    let owned: PathBuf = path.to_owned();
    let (file, meta) = match blocking(move || open_regular(&owned)).await {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            tracing::debug!(path = %path.display(), "not a regular file: refused");
            return problem(StatusCode::NOT_FOUND, "file not found");
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return problem(StatusCode::NOT_FOUND, "file not found");
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::ResourceBusy | io::ErrorKind::TimedOut) => {
            tracing::warn!(path = %path.display(), error = %e, "file not opened");
            return problem(StatusCode::SERVICE_UNAVAILABLE, "the file could not be opened in time");
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open file");
            return problem(StatusCode::INTERNAL_SERVER_ERROR, "cannot open file");
        }
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
    let stream = chunks(Arc::new(file), start, count);
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

    /// A file operation that never returns (a hung NFS read, say) ends with `TimedOut` after
    /// the limit instead of hanging its response. (A paused clock cannot be used: tokio does
    /// not advance it while a blocking task runs.)
    #[tokio::test]
    async fn a_stuck_file_operation_times_out() {
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let limit = Duration::from_millis(100);
        let started = std::time::Instant::now();
        let err = blocking_within(limit, move || {
            let _ = stuck.recv();
            Ok(())
        })
        .await
        .expect_err("a stuck operation must not succeed");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit);
        let _ = release.send(());
    }
}
