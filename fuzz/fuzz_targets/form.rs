//! Form bodies: `application/x-www-form-urlencoded` (as `request/form.rs` decodes it) and
//! `multipart/form-data` through multer driven to completion in memory, the way
//! `form::multipart` does. Input: the first line is the multipart boundary. Checked:
//! nothing panics, nothing hangs, decoding is total.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fn block_on_ready<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let _: Vec<(String, String)> = form_urlencoded::parse(data)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let (first, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => return,
    };
    let Ok(boundary) = std::str::from_utf8(first) else {
        return;
    };
    let ct = format!("multipart/form-data; boundary={boundary}");
    let Ok(boundary) = multer::parse_boundary(&ct) else {
        return;
    };
    let body = Bytes::copy_from_slice(body);
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let parse = async move {
        let mut n = 0usize;
        while let Some(field) = mp.next_field().await.map_err(|e| e.to_string())? {
            let _ = (field.name(), field.file_name(), field.content_type());
            n += field.bytes().await.map_err(|e| e.to_string())?.len();
        }
        Ok::<usize, String>(n)
    };
    assert!(
        block_on_ready(parse).is_some(),
        "the in-memory multipart parse did not complete"
    );
});
