//! `multipart/form-data` bodies through `request/form_parse.rs::multipart` (what
//! `request.form()` and `request.files()` use: multer over the in-memory body).
//!
//! Two runs per input. Raw: the first line is the boundary, the rest the body; checked:
//! nothing panics, the parse always completes (never "did not complete"), and the parts
//! never hold more bytes than the body. Generated: the input split at NUL bytes becomes
//! the parts of a well-formed body (odd-length ones as files); checked: every field and
//! file comes back exactly.
#![no_main]

use bytes::Bytes;
use cello_fuzz::form_parse::{multipart, FormError, Limits, PartData, Source};
use libfuzzer_sys::fuzz_target;

/// No limit in the way: the targets check the parse itself (limits have their own tests).
const OPEN: Limits = Limits {
    max_parts: u64::MAX,
    max_field_size: u64::MAX,
    max_file_size: u64::MAX,
};

/// A file part's bytes (small inputs never reach the spool threshold).
fn bytes_of(data: &PartData) -> Vec<u8> {
    match data {
        PartData::Memory(b) => b.to_vec(),
        PartData::File(path, _) => std::fs::read(path).expect("a spooled part can be read back"),
    }
}

fn raw(data: &[u8]) {
    let Some(i) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(boundary) = std::str::from_utf8(&data[..i]) else {
        return;
    };
    let body = &data[i + 1..];
    let ct = format!("multipart/form-data; boundary={boundary}");
    match multipart(&ct, Source::Memory(Bytes::copy_from_slice(body)), OPEN) {
        Ok(p) => {
            let held: usize = p.files.iter().map(|f| f.data.len() as usize).sum::<usize>()
                + p.fields.iter().map(|(_, v)| v.len()).sum::<usize>();
            // Lossy UTF-8 can grow a text field (1 invalid byte -> 3 bytes of U+FFFD).
            assert!(held <= body.len() * 3, "{held} bytes from a {}-byte body", body.len());
        }
        // (multer's own messages may quote a field name: only this exact one is ours.)
        Err(FormError::Malformed(e)) => assert_ne!(e, "multipart parser did not complete"),
        Err(FormError::TooLarge(e)) => panic!("no limit is set, yet: {e}"),
    }
}

fn generated(data: &[u8]) {
    let parts: Vec<&[u8]> = data.split(|&b| b == 0).take(8).collect();
    let mut boundary = String::from("cellofuzzb");
    while data.windows(boundary.len()).any(|w| w == boundary.as_bytes()) {
        boundary.push('x');
    }
    let mut body = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let file = if part.len() % 2 == 1 {
            format!("; filename=\"f{i}.bin\"\r\nContent-Type: application/octet-stream")
        } else {
            String::new()
        };
        body.extend_from_slice(format!("Content-Disposition: form-data; name=\"f{i}\"{file}\r\n\r\n").as_bytes());
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let Ok(p) = multipart(&ct, Source::Memory(Bytes::from(body)), OPEN) else {
        panic!("a well-formed body parses")
    };
    let (mut fields, mut files) = (p.fields.iter(), p.files.iter());
    for (i, part) in parts.iter().enumerate() {
        let name = format!("f{i}");
        if part.len() % 2 == 1 {
            let f = files.next().expect("every file part comes back");
            assert_eq!(f.name, name);
            assert_eq!(f.filename.as_deref(), Some(format!("f{i}.bin").as_str()));
            assert_eq!(bytes_of(&f.data), *part);
        } else {
            let (k, v) = fields.next().expect("every text part comes back");
            assert_eq!(*k, name);
            assert_eq!(*v, String::from_utf8_lossy(part));
        }
    }
    assert!(fields.next().is_none() && files.next().is_none());
}

fuzz_target!(|data: &[u8]| {
    raw(data);
    generated(data);
});
