//! Form bodies as data: `application/x-www-form-urlencoded` and `multipart/form-data`.
//! Multipart is parsed by multer as a stream, from memory or chunk by chunk from the file
//! the data plane spooled a large body to; big file parts spool to a temporary file. Pure
//! Rust (no Python, no config types), so `fuzz/` compiles this file as is and fuzzes
//! exactly what ships.

use std::future::Future;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
/// File parts up to this size stay in memory; bigger ones go to a temporary file.
pub const FILE_SPOOL_THRESHOLD: usize = 1 << 20;

/// Multipart limits (from `limits`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most parts (fields and files together).
    pub max_parts: u64,
    /// Largest text field, in bytes.
    pub max_field_size: u64,
    /// Largest file part, in bytes.
    pub max_file_size: u64,
}

/// Why a form body was refused.
#[derive(Debug)]
pub enum FormError {
    /// Not a valid body: 400.
    Malformed(String),
    /// Over a limit: 413.
    TooLarge(String),
}

/// Where the body is: in memory, or in the data plane's spool file.
pub enum Source {
    Memory(Bytes),
    File(PathBuf),
}

/// The bytes of a file part.
pub enum PartData {
    Memory(Bytes),
    /// Spooled to a temporary file (deleted on drop), with its size.
    File(tempfile::TempPath, u64),
}

impl PartData {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::File(_, n) => *n,
        }
    }
}

/// One parsed multipart part.
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: PartData,
}

/// A parsed form body: text fields and file parts, in body order.
#[derive(Default)]
pub struct Parsed {
    pub fields: Vec<(String, String)>,
    pub files: Vec<Part>,
}

/// `application/x-www-form-urlencoded` (invalid UTF-8 is replaced, never an error).
pub fn urlencoded(body: &[u8]) -> Parsed {
    let fields = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Parsed {
        fields,
        files: Vec::new(),
    }
}

/// Reads a spool file in chunks (a blocking read: the caller runs without the GIL).
struct FileChunks(std::fs::File);

impl Iterator for FileChunks {
    type Item = std::io::Result<Bytes>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut buf = vec![0u8; 256 * 1024];
        match self.0.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(Ok(Bytes::from(buf)))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

fn io_err(e: &std::io::Error) -> FormError {
    FormError::Malformed(format!("could not read the request body: {e}"))
}

/// `multipart/form-data`: parts without a `filename` are text fields (decoded as UTF-8 with
/// replacement), the others files (as Starlette does, an empty filename is still a file).
pub fn multipart(content_type: &str, body: Source, limits: Limits) -> Result<Parsed, FormError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| FormError::Malformed(format!("bad multipart content type: {e}")))?;
    let stream: futures_util::stream::BoxStream<'static, std::io::Result<Bytes>> = match body {
        Source::Memory(b) => Box::pin(futures_util::stream::once(async move { Ok(b) })),
        Source::File(path) => {
            let file = std::fs::File::open(&path).map_err(|e| io_err(&e))?;
            Box::pin(futures_util::stream::iter(FileChunks(file)))
        }
    };
    let mut mp = multer::Multipart::new(stream, boundary);
    let parse = async move {
        let mut out = Parsed::default();
        let mut parts = 0u64;
        let malformed = |e: multer::Error| FormError::Malformed(format!("malformed multipart body: {e}"));
        while let Some(mut field) = mp.next_field().await.map_err(malformed)? {
            parts += 1;
            if parts > limits.max_parts {
                return Err(FormError::TooLarge(format!(
                    "the form has more than {} parts (limits.maxFormParts)",
                    limits.max_parts
                )));
            }
            let name = field.name().unwrap_or("").to_owned();
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(ToString::to_string);
            let (max, what) = if filename.is_some() {
                (limits.max_file_size, "limits.maxFormFileSize")
            } else {
                (limits.max_field_size, "limits.maxFormFieldSize")
            };
            let mut size = 0u64;
            let mut mem = BytesMut::new();
            let mut file: Option<tempfile::NamedTempFile> = None;
            while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                size += chunk.len() as u64;
                if size > max {
                    return Err(FormError::TooLarge(format!(
                        "part {name:?} is larger than {max} bytes ({what})"
                    )));
                }
                if let Some(f) = file.as_mut() {
                    f.write_all(&chunk).map_err(|e| io_err(&e))?;
                } else if filename.is_some() && mem.len() + chunk.len() > FILE_SPOOL_THRESHOLD {
                    let mut f = tempfile::NamedTempFile::new().map_err(|e| io_err(&e))?;
                    f.write_all(&mem).map_err(|e| io_err(&e))?;
                    f.write_all(&chunk).map_err(|e| io_err(&e))?;
                    mem = BytesMut::new();
                    file = Some(f);
                } else {
                    mem.extend_from_slice(&chunk);
                }
            }
            match filename {
                None => out.fields.push((name, String::from_utf8_lossy(&mem).into_owned())),
                Some(_) => {
                    let data = match file {
                        Some(f) => PartData::File(f.into_temp_path(), size),
                        None => PartData::Memory(mem.freeze()),
                    };
                    out.files.push(Part {
                        name,
                        filename,
                        content_type,
                        data,
                    });
                }
            }
        }
        Ok(out)
    };
    block_on_ready(parse).unwrap_or_else(|| Err(FormError::Malformed("multipart parser did not complete".to_owned())))
}

/// Drive a future whose input never waits on I/O (a buffer, or blocking file reads): polling
/// it with a no-op waker completes it. Gives up (None) rather than spin if it ever pends.
fn block_on_ready<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1024 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}
