//! Python values ↔ [`cello_data::Value`], and data-layer errors → `cello.database` exceptions.
//!
//! Parameters are converted on the loop thread before the statement is sent, so a value
//! the database cannot take is a `TypeError` naming the parameter, and nothing is sent.

use std::str::FromStr;

use bigdecimal::BigDecimal;
use cello_data::{Error, Kind, Value};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDate, PyDateTime, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTime,
    PyTuple, PyType,
};

fn class(py: Python<'_>, cell: &'static PyOnceLock<Py<PyType>>, module: &str, name: &str) -> PyResult<Py<PyType>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import(module)?.getattr(name)?.cast_into::<PyType>()?.unbind())
    })
    .map(|t| t.clone_ref(py))
}

fn decimal_type(py: Python<'_>) -> PyResult<Py<PyType>> {
    static T: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    class(py, &T, "decimal", "Decimal")
}

fn uuid_type(py: Python<'_>) -> PyResult<Py<PyType>> {
    static T: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    class(py, &T, "uuid", "UUID")
}

/// One parameter (`n` is its 1-based position, for messages).
pub fn to_value(obj: &Bound<'_, PyAny>, n: usize) -> PyResult<Value> {
    let py = obj.py();
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.extract()?));
    }
    if obj.is_instance_of::<PyInt>() {
        return Ok(match obj.extract::<i64>() {
            Ok(i) => Value::Int(i),
            // Beyond 64 bits: exact, as NUMERIC.
            Err(_) => Value::Decimal(parse_decimal(&obj.str()?.to_string_lossy(), n)?),
        });
    }
    if obj.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(obj.extract()?));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Text(s.to_str()?.to_owned()));
    }
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() || obj.is_instance_of::<PyMemoryView>() {
        let b: Vec<u8> = if let Ok(m) = obj.cast::<PyMemoryView>() {
            m.call_method0("tobytes")?.extract()?
        } else if let Ok(b) = obj.cast::<PyByteArray>() {
            b.to_vec()
        } else {
            obj.cast::<PyBytes>()?.as_bytes().to_vec()
        };
        return Ok(Value::Bytes(b));
    }
    if obj.is_instance_of::<PyDateTime>() {
        let aware = !obj.getattr("tzinfo")?.is_none() && !obj.call_method0("utcoffset")?.is_none();
        return Ok(if aware {
            Value::DateTimeTz(obj.extract::<DateTime<FixedOffset>>()?)
        } else {
            Value::DateTime(obj.extract::<NaiveDateTime>()?)
        });
    }
    if obj.is_instance_of::<PyDate>() {
        return Ok(Value::Date(obj.extract::<NaiveDate>()?));
    }
    if obj.is_instance_of::<PyTime>() {
        if !obj.getattr("tzinfo")?.is_none() {
            return Err(PyTypeError::new_err(format!(
                "parameter ${n}: a time with a zone cannot be stored; pass a naive time or a datetime"
            )));
        }
        return Ok(Value::Time(obj.extract::<NaiveTime>()?));
    }
    if obj.is_instance(decimal_type(py)?.bind(py))? {
        return Ok(Value::Decimal(parse_decimal(&obj.str()?.to_string_lossy(), n)?));
    }
    if obj.is_instance(uuid_type(py)?.bind(py))? {
        let s = obj.str()?;
        let u = uuid::Uuid::parse_str(&s.to_string_lossy()).map_err(|e| PyValueError::new_err(e.to_string()))?;
        return Ok(Value::Uuid(u));
    }
    if obj.hasattr("__cello_json__")? {
        return json(&obj.getattr("value")?, n);
    }
    if obj.is_instance_of::<PyDict>() {
        return json(obj, n);
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            let item = item?;
            if item.is_instance_of::<PyDict>() || item.is_instance_of::<PyList>() || item.is_instance_of::<PyTuple>() {
                return json(obj, n);
            }
            items.push(to_value(&item, n)?);
        }
        return Ok(Value::Array(items));
    }
    if let Ok(v) = obj.getattr("value") {
        if obj
            .get_type()
            .mro()
            .iter()
            .any(|t| t.getattr("__name__").is_ok_and(|n| n.to_string() == "Enum"))
        {
            return to_value(&v, n);
        }
    }
    Err(PyTypeError::new_err(format!(
        "parameter ${n}: cannot send a {} to the database (use None, bool, int, float, str, bytes, \
         Decimal, UUID, date/time/datetime, dict or list)",
        obj.get_type().name()?
    )))
}

fn parse_decimal(s: &str, n: usize) -> PyResult<BigDecimal> {
    BigDecimal::from_str(s)
        .map_err(|_| PyValueError::new_err(format!("parameter ${n}: {s} is not a finite decimal number")))
}

fn json(obj: &Bound<'_, PyAny>, n: usize) -> PyResult<Value> {
    let bytes = crate::json::dumps(obj.py(), obj)
        .map_err(|e| PyTypeError::new_err(format!("parameter ${n}: cannot encode as JSON: {e}")))?;
    let v = serde_json::from_slice(bytes.as_bytes()).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Value::Json(v))
}

/// All parameters of a statement.
pub fn to_values(params: &Bound<'_, PyAny>) -> PyResult<Vec<Value>> {
    let mut out = Vec::new();
    for (i, p) in params.try_iter()?.enumerate() {
        out.push(to_value(&p?, i + 1)?);
    }
    Ok(out)
}

/// A column value.
pub fn to_py(py: Python<'_>, v: Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => f.into_pyobject(py)?.into_any().unbind(),
        Value::Text(s) => PyString::new(py, &s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
        Value::Decimal(d) => decimal_type(py)?.call1(py, (d.to_string(),))?,
        Value::Uuid(u) => uuid_type(py)?.call1(py, (u.hyphenated().to_string(),))?,
        Value::Json(j) => {
            let bytes = serde_json::to_vec(&j).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
            crate::json::loads(py, PyBytes::new(py, &bytes).as_any())?.unbind()
        }
        Value::Date(d) => d.into_pyobject(py)?.into_any().unbind(),
        Value::Time(t) => t.into_pyobject(py)?.into_any().unbind(),
        Value::DateTime(t) => t.into_pyobject(py)?.into_any().unbind(),
        Value::DateTimeTz(t) => t.into_pyobject(py)?.into_any().unbind(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any().unbind()
        }
    })
}

/// A data-layer error as the matching `cello.database` exception.
pub fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    let (kind, message, sqlstate, constraint) = match e {
        Error::Db {
            kind,
            sqlstate,
            constraint,
            message,
        } => (kind_name(kind), message, sqlstate, constraint),
        Error::Param(m) => return PyTypeError::new_err(m),
        Error::Config(m) => return PyValueError::new_err(m),
        Error::State(m) => ("InterfaceError", m, None, None),
        Error::Unsupported(m) => ("FeatureNotAvailable", m, None, None),
        Error::Redis { message, unavailable } => (
            if unavailable { "RedisUnavailable" } else { "RedisError" },
            message,
            None,
            None,
        ),
    };
    let made = py
        .import("cello.database")
        .and_then(|m| m.getattr("_make_error"))
        .and_then(|f| f.call1((kind, &message, sqlstate, constraint)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::UniqueViolation => "UniqueViolation",
        Kind::ForeignKeyViolation => "ForeignKeyViolation",
        Kind::NotNullViolation => "NotNullViolation",
        Kind::CheckViolation => "CheckViolation",
        Kind::Integrity => "IntegrityError",
        Kind::Operational => "OperationalError",
        Kind::PoolTimeout => "PoolTimeout",
        Kind::TransactionAborted => "TransactionAborted",
        Kind::Database => "DatabaseError",
    }
}
