//! `request.form()` and `request.files()`: `application/x-www-form-urlencoded` and
//! `multipart/form-data` bodies.
//!
//! The data plane has already read the whole body into memory (bounded by
//! `limits.max_body_size`) before the handler runs, so uploads are not spooled to disk
//! again: an [`UploadedFile`] shares the bytes multer split off the body, and `save(path)`
//! writes them to disk with the GIL released.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub use super::form_parse::{multipart, urlencoded, Parsed, Part};

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

    /// Size in bytes.
    fn size(&self) -> usize {
        self.part.data.len()
    }

    fn __len__(&self) -> usize {
        self.part.data.len()
    }

    /// The content as `bytes` (the same object on every call).
    fn read<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        if let Some(b) = self.bytes.get() {
            return b.bind(py).clone();
        }
        let b = PyBytes::new(py, &self.part.data);
        let _ = self.bytes.set(b.clone().unbind());
        b
    }

    /// The content decoded as text (`errors` as for `bytes.decode`).
    #[pyo3(signature = (encoding="utf-8", errors="strict"))]
    fn read_text(&self, py: Python<'_>, encoding: &str, errors: &str) -> PyResult<Py<PyAny>> {
        if encoding.eq_ignore_ascii_case("utf-8") || encoding.eq_ignore_ascii_case("utf8") {
            if let Ok(s) = std::str::from_utf8(&self.part.data) {
                return Ok(s.into_pyobject(py)?.into_any().unbind());
            }
        }
        Ok(self.read(py).call_method1("decode", (encoding, errors))?.unbind())
    }

    /// Write the content to `path` (str or path-like); returns the number of bytes written.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<usize> {
        let data = self.part.data.clone();
        py.detach(move || std::fs::write(&path, &data)).map_err(PyErr::from)?;
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

/// A malformed body: `cello.errors.HTTPException(400)` so the handler answers 400.
pub fn bad_request(py: Python<'_>, detail: String) -> PyErr {
    match py
        .import("cello.errors")
        .and_then(|m| m.getattr("HTTPException"))
        .and_then(|c| c.call1((400, detail.clone())))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyValueError::new_err(detail),
    }
}
