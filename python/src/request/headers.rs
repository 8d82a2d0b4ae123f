//! `request.headers`: a read-only, case-insensitive view over the request's `HeaderMap`.
//!
//! Semantics follow Starlette's `Headers`: `h[key]` and `h.get(key)` give the first value,
//! `getlist(key)` (alias `get_all`) every value; `keys()`, `values()`, `items()` list every
//! header line (a repeated header appears more than once) and `len()` counts them. Names
//! come out lower-cased; values are decoded as ISO-8859-1, so any byte sequence decodes.

use std::sync::Arc;

use http::HeaderMap;
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use super::parse::latin1;

/// `cello.Headers`.
#[pyclass(name = "Headers", module = "cello", frozen, mapping)]
pub struct Headers {
    pub(crate) map: Arc<HeaderMap>,
}

impl Headers {
    fn first<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> Option<Bound<'py, PyString>> {
        let key = key.cast::<PyString>().ok()?;
        let v = self.map.get(key.to_str().ok()?)?;
        Some(PyString::new(py, &latin1(v.as_bytes())))
    }
}

#[pymethods]
impl Headers {
    fn __getitem__<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
        self.first(py, key)
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> Bound<'py, PyAny> {
        match self.first(py, key) {
            Some(v) => v.into_any(),
            None => default.unwrap_or_else(|| py.None().into_bound(py)),
        }
    }

    /// Every value of `key`, in order (`[]` when absent).
    fn getlist<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let Some(name) = key.cast::<PyString>().ok().and_then(|k| k.to_str().ok()) else {
            return Ok(PyList::empty(py));
        };
        PyList::new(py, self.map.get_all(name).iter().map(|v| latin1(v.as_bytes())))
    }

    /// Alias of `getlist`.
    fn get_all<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        self.getlist(py, key)
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> bool {
        key.cast::<PyString>()
            .ok()
            .and_then(|k| k.to_str().ok())
            .is_some_and(|k| self.map.contains_key(k))
    }

    fn __len__(&self) -> usize {
        self.map.len()
    }

    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.map.iter().map(|(k, _)| k.as_str()))
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.map.values().map(|v| latin1(v.as_bytes())))
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items: PyResult<Vec<_>> = self
            .map
            .iter()
            .map(|(k, v)| PyTuple::new(py, [k.as_str(), &latin1(v.as_bytes())]))
            .collect();
        PyList::new(py, items?)
    }

    /// Alias of `items()` (every header line).
    fn multi_items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.items(py)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.keys(py)?.try_iter()?.into_any())
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(o) = other.cast::<Headers>() {
            return Ok(*self.map == *o.get().map);
        }
        // Compare with a plain mapping: same names (case-insensitive) and first values.
        let Ok(d) = other.cast::<pyo3::types::PyDict>() else {
            return Ok(false);
        };
        let mine = self.items(py)?;
        let lowered = pyo3::types::PyDict::new(py);
        for (k, v) in d.iter() {
            lowered.set_item(k.str()?.to_str()?.to_ascii_lowercase(), v)?;
        }
        let dict_of_mine = pyo3::types::PyDict::new(py);
        for item in mine.iter() {
            let (k, v): (String, String) = item.extract()?;
            if !dict_of_mine.contains(&k)? {
                dict_of_mine.set_item(k, v)?;
            }
        }
        dict_of_mine.eq(lowered)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("Headers({})", self.items(py)?.repr()?))
    }
}
