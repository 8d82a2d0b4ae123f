//! Form bodies as data: `application/x-www-form-urlencoded` and `multipart/form-data`
//! parsed from bytes already in memory. Pure Rust (no Python), so `fuzz/` compiles this
//! file as is and fuzzes exactly what ships.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// One parsed multipart part.
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
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

/// `multipart/form-data`: parts without a `filename` are text fields (decoded as UTF-8 with
/// replacement), the others files (as Starlette does, an empty filename is still a file).
pub fn multipart(content_type: &str, body: Bytes) -> Result<Parsed, String> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| format!("bad multipart content type: {e}"))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let parse = async move {
        let mut out = Parsed::default();
        while let Some(field) = mp.next_field().await.map_err(|e| e.to_string())? {
            let name = field.name().unwrap_or("").to_owned();
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(ToString::to_string);
            let data = field.bytes().await.map_err(|e| e.to_string())?;
            match filename {
                None => out.fields.push((name, String::from_utf8_lossy(&data).into_owned())),
                Some(_) => out.files.push(Part {
                    name,
                    filename,
                    content_type,
                    data,
                }),
            }
        }
        Ok(out)
    };
    block_on_ready(parse).unwrap_or_else(|| Err("multipart parser did not complete".to_owned()))
}

/// Drive a future whose input is already in memory: it never waits on I/O, so polling it
/// with a no-op waker completes it. Gives up (None) rather than spin if it ever pends.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_fields() {
        let p = urlencoded(b"a=1&b=two+words&c=%C3%A9&d=%FF&&=x&e");
        let want = [
            ("a", "1"),
            ("b", "two words"),
            ("c", "é"),
            ("d", "\u{fffd}"),
            ("", "x"),
            ("e", ""),
        ];
        assert_eq!(p.fields, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    }

    #[test]
    fn multipart_fields_and_files() {
        let body = Bytes::from_static(
            b"--xyz\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n\
              --xyz\r\nContent-Disposition: form-data; name=\"up\"; filename=\"a.txt\"\r\n\
              Content-Type: text/plain\r\n\r\nfile body\r\n--xyz--\r\n",
        );
        let p = multipart("multipart/form-data; boundary=xyz", body).unwrap();
        assert_eq!(p.fields, [("title".to_owned(), "hello".to_owned())]);
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.files[0].filename.as_deref(), Some("a.txt"));
        assert_eq!(p.files[0].content_type.as_deref(), Some("text/plain"));
        assert_eq!(&p.files[0].data[..], b"file body");
    }

    #[test]
    fn malformed_multipart_is_an_error() {
        assert!(multipart("multipart/form-data", Bytes::new()).is_err());
        assert!(multipart(
            "multipart/form-data; boundary=xyz",
            Bytes::from_static(b"--xyz\r\nbroken")
        )
        .is_err());
        let empty = multipart("multipart/form-data; boundary=xyz", Bytes::new());
        assert!(empty.is_err() || empty.is_ok_and(|p| p.fields.is_empty() && p.files.is_empty()));
    }
}
