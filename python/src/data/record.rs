//! `Record`: a row as a `dict` (column → value) that also answers `row[0]` by position.
//! A dict subclass, so JSON responses, `dict(row)` and `**row` work as they do on dicts.

use pyo3::exceptions::{PyIndexError, PyKeyError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyTuple};

use cello_data::Rows;

use super::convert::to_py;

#[pyclass(extends = PyDict, module = "cello.database", name = "Record")]
pub struct Record {
    /// The values in column order (positions survive duplicate column names).
    values: Py<PyTuple>,
}

#[pymethods]
impl Record {
    fn __getitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if key.is_instance_of::<PyInt>() && !key.is_instance_of::<pyo3::types::PyBool>() {
            let values = slf.borrow().values.clone_ref(py);
            let values = values.bind(py);
            let len = values.len() as isize;
            let mut i: isize = key.extract()?;
            if i < 0 {
                i += len;
            }
            if i < 0 || i >= len {
                return Err(PyIndexError::new_err("record index out of range"));
            }
            return Ok(values.get_item(i as usize)?.unbind());
        }
        let dict = slf.as_any().cast::<PyDict>()?;
        match dict.get_item(key)? {
            Some(v) => Ok(v.unbind()),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// The values in column order.
    fn values_tuple(&self, py: Python<'_>) -> Py<PyTuple> {
        self.values.clone_ref(py)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let dict = slf.as_any().cast::<PyDict>()?;
        let inner = pyo3::types::PyDict::new(slf.py());
        inner.update(dict.as_mapping())?;
        Ok(format!("Record({})", inner.repr()?))
    }
}

/// Rows as a list of `Record`s, or of tuples (`tuples=True`, the fast mode).
pub fn rows_to_py(py: Python<'_>, rows: Rows, tuples: bool) -> PyResult<Py<PyList>> {
    let list = PyList::empty(py);
    let names: Vec<Bound<'_, PyAny>> = rows
        .columns
        .iter()
        .map(|c| pyo3::types::PyString::new(py, c).into_any())
        .collect();
    for row in rows.rows {
        let mut values = Vec::with_capacity(row.len());
        for v in row {
            values.push(to_py(py, v)?);
        }
        let tuple = PyTuple::new(py, values)?;
        if tuples {
            list.append(tuple)?;
            continue;
        }
        let rec = Bound::new(
            py,
            Record {
                values: tuple.clone().unbind(),
            },
        )?;
        let dict = rec.as_any().cast::<PyDict>()?;
        for (name, value) in names.iter().zip(tuple.iter()) {
            dict.set_item(name, value)?;
        }
        list.append(rec)?;
    }
    Ok(list.unbind())
}
