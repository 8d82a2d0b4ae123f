//! `request.form()` and `request.files()`: `application/x-www-form-urlencoded` and
//! `multipart/form-data` bodies.
//!
//! Multipart bodies are parsed by multer as a stream: from the buffer, or chunk by chunk
//! from the file the data plane spooled a large body to, so a big upload is never held in
//! memory whole. A file part stays in memory up to [`FILE_SPOOL_THRESHOLD`] bytes; a bigger
//! one is written to a temporary file (removed when its `UploadedFile` goes, i.e. after the
//! request unless the handler keeps it). The part count, field size and file size are
//! bounded by `limits.maxFormParts`, `limits.maxFormFieldSize` and `limits.maxFormFileSize`
//! (413), the whole body by `limits.maxBodySize`; a malformed body is 400.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub use super::form_parse::{
    multipart, urlencoded, FormError, Limits, Parsed, Part, PartData, Source, FILE_SPOOL_THRESHOLD,
};

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&cello_config::LimitsConfig::default())
    }
}

impl Limits {
    /// The limits of `limits` (a file part may be as large as the body when unset).
    pub fn from_config(c: &cello_config::LimitsConfig) -> Self {
        Self {
            max_parts: c.max_form_parts,
            max_field_size: c.max_form_field_size,
            max_file_size: c.max_form_file_size.unwrap_or(c.max_body_size),
        }
    }
}

/// `cello.UploadedFile`: one file part of a multipart body.
#[pyclass(name = "UploadedFile", module = "cello", frozen)]
pub struct UploadedFile {
    part: Part,
    bytes: std::sync::OnceLock<Py<PyBytes>>,
}

impl UploadedFile {
    pub fn new(part: Part) -> Self {
        Self {
            part,
            bytes: std::sync::OnceLock::new(),
        }
    }
}

#[pymethods]
impl UploadedFile {
    /// The form field name.
    #[getter]
    fn name(&self) -> &str {
        &self.part.name
    }

    /// The file name the client sent, as sent (may contain path separators: never use it
    /// as a path without sanitising it).
    #[getter]
    fn filename(&self) -> Option<&str> {
        self.part.filename.as_deref()
    }

    /// The part's `Content-Type`, `application/octet-stream` when the client sent none.
    #[getter]
    fn content_type(&self) -> &str {
        self.part.content_type.as_deref().unwrap_or("application/octet-stream")
    }

    /// Whether the content is in a temporary file rather than in memory.
    #[getter]
    fn spooled(&self) -> bool {
        matches!(self.part.data, PartData::File(..))
    }

    /// The temporary file of a spooled part (for tests: it is removed with this object).
    #[getter]
    fn _path(&self) -> Option<String> {
        match &self.part.data {
            PartData::File(p, _) => Some(p.to_string_lossy().into_owned()),
            PartData::Memory(_) => None,
        }
    }

    /// Size in bytes.
    fn size(&self) -> u64 {
        self.part.data.len()
    }

    fn __len__(&self) -> usize {
        usize::try_from(self.part.data.len()).unwrap_or(usize::MAX)
    }

    /// The content as `bytes` (the same object on every call; a spooled part is read from
    /// its file then).
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(b) = self.bytes.get() {
            return Ok(b.bind(py).clone());
        }
        let b = match &self.part.data {
            PartData::Memory(data) => PyBytes::new(py, data),
            PartData::File(path, _) => {
                let path = path.to_path_buf();
                let data = py.detach(move || std::fs::read(path)).map_err(PyErr::from)?;
                PyBytes::new(py, &data)
            }
        };
        let _ = self.bytes.set(b.clone().unbind());
        Ok(b)
    }

    /// The content decoded as text (`errors` as for `bytes.decode`).
    #[pyo3(signature = (encoding="utf-8", errors="strict"))]
    fn read_text(&self, py: Python<'_>, encoding: &str, errors: &str) -> PyResult<Py<PyAny>> {
        if let PartData::Memory(data) = &self.part.data {
            if encoding.eq_ignore_ascii_case("utf-8") || encoding.eq_ignore_ascii_case("utf8") {
                if let Ok(s) = std::str::from_utf8(data) {
                    return Ok(s.into_pyobject(py)?.into_any().unbind());
                }
            }
        }
        Ok(self.read(py)?.call_method1("decode", (encoding, errors))?.unbind())
    }

    /// Write the content to `path` (str or path-like); returns the number of bytes written.
    /// The path is the caller's: `filename` is never used as one.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<u64> {
        match &self.part.data {
            PartData::Memory(data) => {
                let data = data.clone();
                py.detach(move || std::fs::write(&path, &data)).map_err(PyErr::from)?;
            }
            PartData::File(src, _) => {
                let src = src.to_path_buf();
                py.detach(move || std::fs::copy(src, &path)).map_err(PyErr::from)?;
            }
        }
        Ok(self.part.data.len())
    }
    /// The lower-cased extension of `filename` without the dot (`"txt"`), `""` if none.
    fn extension(&self) -> String {
        let name = self.part.filename.as_deref().unwrap_or("");
        let base = name.rsplit(['/', '\\']).next().unwrap_or("");
        match base.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
            _ => String::new(),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "UploadedFile(name={:?}, filename={:?}, content_type={:?}, size={})",
            self.part.name,
            self.part.filename.as_deref().unwrap_or(""),
            self.content_type(),
            self.part.data.len()
        )
    }
}

/// A refused form body as `cello.errors.HTTPException` (400 malformed, 413 over a limit), so
/// the handler answers with that status.
pub fn refused(py: Python<'_>, err: FormError) -> PyErr {
    let (status, detail) = match err {
        FormError::Malformed(d) => (400, d),
        FormError::TooLarge(d) => (413, d),
    };
    match py
        .import("cello.errors")
        .and_then(|m| m.getattr("HTTPException"))
        .and_then(|c| c.call1((status, detail.clone())))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyValueError::new_err(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
        let p = multipart(
            "multipart/form-data; boundary=xyz",
            Source::Memory(body),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(p.fields, [("title".to_owned(), "hello".to_owned())]);
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.files[0].filename.as_deref(), Some("a.txt"));
        assert_eq!(p.files[0].content_type.as_deref(), Some("text/plain"));
        assert!(matches!(&p.files[0].data, PartData::Memory(b) if &b[..] == b"file body"));
    }

    fn body_of(parts: &[(&str, Option<&str>, usize)]) -> Bytes {
        let mut b = Vec::new();
        for (name, filename, n) in parts {
            b.extend_from_slice(b"--xyz\r\nContent-Disposition: form-data; name=\"");
            b.extend_from_slice(name.as_bytes());
            b.push(b'"');
            if let Some(f) = filename {
                b.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
            }
            b.extend_from_slice(b"\r\n\r\n");
            b.extend(std::iter::repeat_n(b'a', *n));
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"--xyz--\r\n");
        Bytes::from(b)
    }

    #[test]
    fn limits_are_413_and_big_files_are_spooled() {
        let ct = "multipart/form-data; boundary=xyz";
        let lim = Limits {
            max_parts: 2,
            max_field_size: 10,
            max_file_size: 3 << 20,
        };
        let run = |parts: &[(&str, Option<&str>, usize)]| multipart(ct, Source::Memory(body_of(parts)), lim);
        assert!(matches!(
            run(&[("a", None, 1), ("b", None, 1), ("c", None, 1)]),
            Err(FormError::TooLarge(_))
        ));
        assert!(matches!(run(&[("a", None, 11)]), Err(FormError::TooLarge(_))));
        assert!(matches!(
            run(&[("f", Some("x.bin"), (3 << 20) + 1)]),
            Err(FormError::TooLarge(_))
        ));
        let p = run(&[("a", None, 10), ("f", Some("x.bin"), 2 << 20)]).unwrap();
        match &p.files[0].data {
            PartData::File(path, n) => {
                assert_eq!(*n, 2 << 20);
                assert_eq!(std::fs::metadata(path).unwrap().len(), 2 << 20);
            }
            PartData::Memory(_) => panic!("a 2 MiB file part stays in memory"),
        }
    }

    #[test]
    fn malformed_multipart_is_an_error() {
        let mem = |b: &'static [u8]| Source::Memory(Bytes::from_static(b));
        let lim = Limits::default();
        assert!(multipart("multipart/form-data", mem(b""), lim).is_err());
        assert!(multipart("multipart/form-data; boundary=xyz", mem(b"--xyz\r\nbroken"), lim).is_err());
        let empty = multipart("multipart/form-data; boundary=xyz", mem(b""), lim);
        assert!(empty.is_err() || empty.is_ok_and(|p| p.fields.is_empty() && p.files.is_empty()));
    }
}
