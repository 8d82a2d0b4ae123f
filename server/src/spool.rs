//! Request bodies for handlers, read without holding a large body in memory: up to
//! [`SPOOL_THRESHOLD`] bytes stay in one buffer; a bigger body is written to an anonymous-named
//! temporary file as it arrives (deleted when the last holder lets go). The size limit, the
//! `Content-Length` check and the read deadline are those of buffered bodies.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{header, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::body::{RequestBody, ResponseBody};
use crate::problem::problem;
use cello_config::ServerConfig;

/// Bodies up to this many bytes stay in memory.
pub const SPOOL_THRESHOLD: usize = 1 << 20;

/// A body spooled to disk. The file is removed when this is dropped.
pub struct SpooledFile {
    file: tempfile::TempPath,
    len: u64,
}

impl SpooledFile {
    /// Where the body is.
    pub fn path(&self) -> &std::path::Path {
        &self.file
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty (never, in practice: small bodies are not spooled).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Request extension: the body of this request is in a file (the `body` field is empty).
#[derive(Clone)]
pub struct Spooled(pub Arc<SpooledFile>);

fn too_large(max: u64) -> Response<ResponseBody> {
    problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body exceeds the limit of {max} bytes"),
    )
}

fn io_failed(e: &std::io::Error) -> Response<ResponseBody> {
    tracing::error!(error = %e, "could not spool a request body to disk");
    problem(StatusCode::INSUFFICIENT_STORAGE, "the request body could not be stored")
}

/// Read `body` within `max` bytes and `timeouts.readBody`: in memory up to the threshold,
/// else into a temporary file.
// The refusal is the response itself, returned as is (as `target::read_body` does).
#[allow(clippy::result_large_err)]
pub async fn read(
    config: &ServerConfig,
    parts: &http::request::Parts,
    mut body: RequestBody,
    max: u64,
) -> Result<(Bytes, Option<Spooled>), Response<ResponseBody>> {
    if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) if n > max => {
                return Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body of {n} bytes exceeds the limit of {max} bytes"),
                ));
            }
            Some(_) => {}
            None => return Err(problem(StatusCode::BAD_REQUEST, "invalid Content-Length")),
        }
    }
    if body.is_end_stream() {
        return Ok((Bytes::new(), None));
    }
    // A small body has usually arrived with its head: one poll before arming the deadline
    // finds it, and a body of one frame is handed on as it is (no timer, no copy).
    let early = body.frame().now_or_never();
    if let Some(Some(Ok(frame))) = &early {
        if body.is_end_stream() {
            if let Some(data) = frame.data_ref() {
                if data.len() as u64 > max {
                    return Err(too_large(max));
                }
                if data.len() <= SPOOL_THRESHOLD {
                    let data = data.clone();
                    return Ok((data, None));
                }
            }
        }
    }
    // The rest in a future of its own on the heap: its state (the deadline, the buffer, the
    // spool file) would otherwise be part of every request future that may read a body, and
    // be moved with it whether a body comes or not.
    Box::pin(read_rest(config.timeouts.read_body, body, early, max)).await
}

/// The body after its first poll (`early`, when that found something).
type Polled = Option<Option<Result<http_body::Frame<Bytes>, crate::body::BoxError>>>;

#[allow(clippy::result_large_err)]
async fn read_rest(
    read_body_secs: f64,
    mut body: RequestBody,
    mut early: Polled,
    max: u64,
) -> Result<(Bytes, Option<Spooled>), Response<ResponseBody>> {
    let deadline = tokio::time::sleep(Duration::from_secs_f64(read_body_secs));
    tokio::pin!(deadline);
    let mut buf = BytesMut::new();
    let mut file: Option<(tokio::io::BufWriter<tokio::fs::File>, tempfile::TempPath)> = None;
    let mut total: u64 = 0;
    loop {
        let frame = match early.take() {
            Some(f) => f,
            None => tokio::select! {
                () = &mut deadline => {
                    return Err(problem(StatusCode::REQUEST_TIMEOUT, "the request body was not received in time"));
                }
                f = body.frame() => f,
            },
        };
        let data = match frame {
            None => break,
            // A chunk larger than any body limit, refused by the connection (issue 9).
            Some(Err(e)) if crate::target::chunk_too_large(&*e) => {
                return Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body exceeds the limit of {max} bytes"),
                ))
            }
            Some(Err(e)) => {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                ))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
        };
        total += data.len() as u64;
        if total > max {
            return Err(too_large(max));
        }
        if let Some((w, _)) = file.as_mut() {
            w.write_all(&data).await.map_err(|e| io_failed(&e))?;
            continue;
        }
        buf.extend_from_slice(&data);
        if buf.len() > SPOOL_THRESHOLD {
            // Past the threshold: everything so far and the rest go to disk.
            let named = tempfile::Builder::new()
                .prefix("cello-body-")
                .tempfile()
                .map_err(|e| io_failed(&e))?;
            let (std_file, path) = named.into_parts();
            let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(std_file));
            w.write_all(&buf).await.map_err(|e| io_failed(&e))?;
            buf = BytesMut::new();
            file = Some((w, path));
        }
    }
    match file {
        None => Ok((buf.freeze(), None)),
        Some((mut w, path)) => {
            w.flush().await.map_err(|e| io_failed(&e))?;
            Ok((
                Bytes::new(),
                Some(Spooled(Arc::new(SpooledFile { file: path, len: total }))),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> http::request::Parts {
        http::Request::post("/").body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory_and_big_ones_go_to_a_file_that_is_removed() {
        let config = ServerConfig::default();
        let Ok((b, s)) = read(&config, &parts(), RequestBody::full("hello"), 100).await else {
            panic!("a small body was refused");
        };
        assert_eq!((&b[..], s.is_none()), (&b"hello"[..], true));

        let big = vec![7u8; SPOOL_THRESHOLD + 10];
        let Ok((b, s)) = read(&config, &parts(), RequestBody::full(big.clone()), 1 << 30).await else {
            panic!("a big body was refused");
        };
        let s = s.expect("spooled");
        assert!(b.is_empty());
        assert_eq!(s.0.len(), big.len() as u64);
        let path = s.0.path().to_owned();
        assert_eq!(std::fs::read(&path).unwrap(), big);
        drop(s);
        assert!(!path.exists(), "the spool file outlives its request");

        let Err(resp) = read(&config, &parts(), RequestBody::full(vec![0u8; 200]), 100).await else {
            panic!("a body over the limit was accepted");
        };
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A body in several frames, the first one already there and the rest arriving later,
    /// goes through the first poll and then the deadline-bound loop, and is read whole.
    #[tokio::test]
    async fn a_body_in_frames_is_read_whole_and_a_stalled_one_times_out() {
        let mut config = ServerConfig::default();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Ok(Bytes::from_static(b"hel"))).await.unwrap();
        let late = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(Ok(Bytes::from_static(b"lo"))).await.unwrap();
        });
        let Ok((b, s)) = read(&config, &parts(), RequestBody::Channel(rx), 100).await else {
            panic!("a body in frames was refused");
        };
        late.await.unwrap();
        assert_eq!((&b[..], s.is_none()), (&b"hello"[..], true));

        config.timeouts.read_body = 0.05;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Ok(Bytes::from_static(b"hel"))).await.unwrap();
        let Err(resp) = read(&config, &parts(), RequestBody::Channel(rx), 100).await else {
            panic!("a stalled body was accepted");
        };
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        drop(tx);
    }
}
