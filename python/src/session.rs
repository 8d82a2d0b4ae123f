//! `request.session`: a dict-like view of the session the Rust session layer loaded.
//!
//! Every change through the mapping methods hands the whole data (as JSON) to the
//! request's [`SessionSlot`] at once, so the layer saves it after the response — and only
//! then. A value changed in place (`session["cart"].append(x)`) is not seen: assign it
//! again or set `session.modified = True`.

use std::sync::Arc;

use cello_server::session::SessionSlot;
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyIterator, PyList};

/// `request.session`.
#[pyclass(name = "Session", module = "cello", frozen, mapping)]
pub struct PySession {
    slot: Arc<SessionSlot>,
    data: Py<PyDict>,
}

impl PySession {
    /// The session of `slot`, its data parsed once.
    pub fn new(py: Python<'_>, slot: Arc<SessionSlot>) -> PyResult<Self> {
        let parsed = crate::json::parse(py, &slot.data_json())?;
        let data = parsed
            .cast_into::<PyDict>()
            .map_err(|_| PyValueError::new_err("session data is not an object"))?;
        Ok(Self {
            slot,
            data: data.unbind(),
        })
    }

    /// Hand the data to the layer (JSON; a value JSON cannot hold raises `TypeError` here).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let json = crate::json::to_vec(self.data.bind(py).as_any())?;
        self.slot.store_json(&json).map_err(PyValueError::new_err)
    }

    /// Run `change` on the data, then flush; undo the change when the flush is refused.
    fn change<'py, T>(&self, py: Python<'py>, change: impl FnOnce(&Bound<'py, PyDict>) -> PyResult<T>) -> PyResult<T> {
        let d = self.data.bind(py);
        let before = d.copy()?;
        let out = change(d)?;
        if let Err(e) = self.flush(py) {
            d.clear();
            d.update(before.as_mapping())?;
            return Err(e);
        }
        Ok(out)
    }
}

#[pymethods]
impl PySession {
    fn __getitem__<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.data
            .bind(py)
            .get_item(key)?
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __setitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if !key.is_instance_of::<pyo3::types::PyString>() {
            return Err(pyo3::exceptions::PyTypeError::new_err("session keys must be str"));
        }
        self.change(py, |d| d.set_item(key, value))
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.data.bind(py).contains(key)? {
            return Err(PyKeyError::new_err(key.clone().unbind()));
        }
        self.change(py, |d| d.del_item(key))
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.data.bind(py).contains(key)
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.data.bind(py).len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        // Iterate over a snapshot of the keys: changing the session while iterating is fine.
        PyIterator::from_object(self.data.bind(py).keys().as_any())
    }

    fn __bool__(&self, py: Python<'_>) -> bool {
        !self.data.bind(py).is_empty()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("Session({})", self.data.bind(py).repr()?))
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(o) = other.cast::<PySession>() {
            return self.data.bind(py).eq(o.get().data.bind(py));
        }
        self.data.bind(py).eq(other)
    }

    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self.data.bind(py).get_item(key)? {
            Some(v) => v,
            None => default.unwrap_or_else(|| py.None().into_bound(py)),
        })
    }

    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.data.bind(py).get_item(key)? {
            Some(v) => {
                self.change(py, |d| d.del_item(key))?;
                Ok(v)
            }
            None => match default.len() {
                0 => Err(PyKeyError::new_err(key.clone().unbind())),
                _ => default.get_item(0),
            },
        }
    }

    #[pyo3(signature = (key, default=None))]
    fn setdefault<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(v) = self.data.bind(py).get_item(key)? {
            return Ok(v);
        }
        let v = default.unwrap_or_else(|| py.None().into_bound(py));
        self.__setitem__(py, key, &v)?;
        Ok(v)
    }

    /// `update(mapping_or_pairs, **kwargs)` like `dict.update`.
    #[pyo3(signature = (other=None, **kwargs))]
    fn update(
        &self,
        py: Python<'_>,
        other: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let merged = PyDict::new(py);
        if let Some(o) = other {
            let as_dict = py.get_type::<PyDict>().call1((o,))?;
            merged.update(as_dict.cast::<PyDict>()?.as_mapping())?;
        }
        if let Some(k) = kwargs {
            merged.update(k.as_mapping())?;
        }
        if merged
            .keys()
            .iter()
            .any(|k| !k.is_instance_of::<pyo3::types::PyString>())
        {
            return Err(pyo3::exceptions::PyTypeError::new_err("session keys must be str"));
        }
        self.change(py, |d| d.update(merged.as_mapping()))
    }

    fn keys<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.data.bind(py).keys()
    }

    fn values<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.data.bind(py).values()
    }

    fn items<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.data.bind(py).items()
    }

    /// A plain `dict` copy of the data.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.data.bind(py).copy()
    }

    /// Log out: no data, and a new id (the old one is deleted from a server store).
    fn clear(&self, py: Python<'_>) {
        self.data.bind(py).clear();
        self.slot.clear();
    }

    /// A new id for the same data: call it at login (session fixation).
    fn regenerate(&self) {
        self.slot.regenerate();
    }

    /// Whether the data was changed through this object in this request. Setting it to
    /// `True` saves the session after a value was changed in place.
    #[getter]
    fn modified(&self) -> bool {
        self.slot.changed()
    }

    #[setter]
    fn set_modified(&self, py: Python<'_>, value: bool) -> PyResult<()> {
        if value {
            self.flush(py)?;
        }
        Ok(())
    }
}
