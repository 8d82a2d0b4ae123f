//! JSON codec. Interim implementation over Python's `json`; to be replaced by a
//! direct Python-object → bytes writer and simd-json parsing.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Serialise a Python object to JSON bytes.
pub fn to_vec(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let py = obj.py();
    let s = py.import("cello._json_fallback")?.call_method1("dumps", (obj,))?;
    s.extract::<Vec<u8>>()
}

/// `dumps(obj) -> bytes`.
#[pyfunction]
pub fn dumps<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &to_vec(obj)?))
}

/// `loads(data) -> object`.
#[pyfunction]
pub fn loads<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (data,))
}
