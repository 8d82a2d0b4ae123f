//! The JSON codec: [`to_vec`] writes JSON straight from Python objects ([`write`]);
//! [`parse`] reads it with simd-json ([`read`]). `dumps`/`loads` expose both to Python.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};

pub mod read;
pub mod scan;
pub mod text;
pub mod write;

/// The deepest container nesting read or written (`[[1]]` is 2): the reader refuses
/// deeper input (`JsonDecodeError`, a 400 for a request body), so whatever it accepted
/// can be echoed back by the writer.
pub const MAX_DEPTH: usize = 512;

pub use read::parse;
pub use write::to_vec;

/// `dumps(obj) -> bytes`: compact JSON, see [`write`] for the supported types.
#[pyfunction]
pub fn dumps<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &to_vec(obj)?))
}

/// `loads(data: bytes | bytearray | memoryview | str) -> object`; malformed input raises
/// `JsonDecodeError` (a `ValueError`) naming the line and column.
#[pyfunction]
pub fn loads<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return parse(py, b.as_bytes());
    }
    if let Ok(s) = data.cast::<PyString>() {
        return parse(py, s.to_str()?.as_bytes());
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return parse(py, &b.to_vec());
    }
    if data.is_instance_of::<PyMemoryView>() {
        let b: Vec<u8> = data.call_method0("tobytes")?.extract()?;
        return parse(py, &b);
    }
    Err(PyTypeError::new_err(format!(
        "the JSON object must be str, bytes, bytearray or memoryview, not {}",
        data.get_type().name()?
    )))
}
