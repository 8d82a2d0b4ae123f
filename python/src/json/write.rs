//! Python objects → JSON bytes, written directly (no intermediate tree).
//!
//! Output for plain JSON types (dict, list, tuple, str, int, float, bool, None) is
//! byte-identical to `json.dumps(obj, separators=(",", ":"), ensure_ascii=False)`, except
//! that non-finite floats become `null` (as orjson and pydantic do) instead of the invalid
//! tokens `NaN`/`Infinity`. Beyond those:
//!
//! * `datetime`, `date`, `time` → their `isoformat()` (aware values keep their offset);
//! * `uuid.UUID` → its canonical string; `decimal.Decimal` → `str(d)` as a JSON *string*
//!   (exact, like pydantic's JSON mode; a JSON number would be rounded to a double by most
//!   readers);
//! * `enum.Enum` → its value (recursively); dataclasses → an object of their fields;
//!   pydantic v2 models → `model_dump_json()` embedded as is;
//! * `set`/`frozenset` → array; `bytes`/`bytearray` → `TypeError` (encode them yourself:
//!   base64, hex or text are all plausible, so no guess is made);
//! * dict keys: `str` as is; `int`, `float`, `bool`, `None` as `json.dumps` spells them
//!   (`"1"`, `"1.5"`, `"true"`, `"null"`); `Enum` keys → their value; `UUID`, `Decimal`,
//!   `datetime`/`date`/`time` keys → their string form; anything else → `TypeError`.
//!
//! Nesting deeper than [`MAX_DEPTH`] (including reference cycles) raises `ValueError`.

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDate, PyDateAccess, PyDateTime, PyDelta, PyDeltaAccess, PyDict, PyFloat,
    PyFrozenSet, PyInt, PyList, PySet, PyString, PyTime, PyTimeAccess, PyTuple, PyType, PyTzInfoAccess,
};

/// Containers nested deeper than this raise `ValueError("nesting too deep")`.
pub use super::MAX_DEPTH;

use super::text::{write_float, write_str};

/// Python types looked up once per process.
struct Types {
    uuid: Py<PyType>,
    decimal: Py<PyType>,
    enum_: Py<PyType>,
    /// `dataclasses._FIELD`: marks real fields (not `ClassVar`/`InitVar` pseudo-fields).
    dc_field: Py<PyAny>,
    /// `type → tuple of field names` for the dataclasses seen so far.
    dc_cache: Py<PyDict>,
    /// `sys.modules`, to find pydantic only when the application imported it.
    modules: Py<PyDict>,
}

static TYPES: PyOnceLock<Types> = PyOnceLock::new();
static BASE_MODEL: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn types(py: Python<'_>) -> PyResult<&'static Types> {
    TYPES.get_or_try_init(py, || {
        let ty = |m: &str, n: &str| -> PyResult<Py<PyType>> {
            Ok(py.import(m)?.getattr(n)?.cast_into::<PyType>()?.unbind())
        };
        Ok(Types {
            uuid: ty("uuid", "UUID")?,
            decimal: ty("decimal", "Decimal")?,
            enum_: ty("enum", "Enum")?,
            dc_field: py.import("dataclasses")?.getattr("_FIELD")?.unbind(),
            dc_cache: PyDict::new(py).unbind(),
            modules: py.import("sys")?.getattr("modules")?.cast_into::<PyDict>()?.unbind(),
        })
    })
}

/// `pydantic.BaseModel` if the application has imported pydantic (never imports it).
fn base_model<'py>(py: Python<'py>, t: &Types) -> PyResult<Option<&'static Py<PyType>>> {
    if let Some(b) = BASE_MODEL.get(py) {
        return Ok(Some(b));
    }
    let Some(module) = t.modules.bind(py).get_item("pydantic")? else {
        return Ok(None);
    };
    let Some(cls) = module.getattr_opt("BaseModel")? else {
        return Ok(None);
    };
    let Ok(cls) = cls.cast_into::<PyType>() else {
        return Ok(None);
    };
    let _ = BASE_MODEL.set(py, cls.unbind());
    Ok(BASE_MODEL.get(py))
}

/// Serialise `obj` to JSON bytes.
pub fn to_vec(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut w = Writer {
        buf: Vec::with_capacity(128),
        types: types(obj.py())?,
    };
    w.value(obj, 0)?;
    Ok(w.buf)
}

struct Writer {
    buf: Vec<u8>,
    types: &'static Types,
}

fn too_deep() -> PyErr {
    PyValueError::new_err(format!(
        "cannot serialize to JSON: nesting too deep (more than {MAX_DEPTH} levels; is there a reference cycle?)"
    ))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

impl Writer {
    fn value(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
        // Exact-type fast paths, most frequent first.
        if let Ok(s) = obj.cast_exact::<PyString>() {
            write_str(&mut self.buf, s.to_str()?);
            return Ok(());
        }
        if let Ok(d) = obj.cast_exact::<PyDict>() {
            return self.dict(d, depth);
        }
        if let Ok(i) = obj.cast_exact::<PyInt>() {
            return self.int(i);
        }
        if let Ok(l) = obj.cast_exact::<PyList>() {
            return self.list(l, depth);
        }
        if let Ok(f) = obj.cast_exact::<PyFloat>() {
            write_float(&mut self.buf, f.value());
            return Ok(());
        }
        if let Ok(b) = obj.cast_exact::<PyBool>() {
            self.buf.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
            return Ok(());
        }
        if obj.is_none() {
            self.buf.extend_from_slice(b"null");
            return Ok(());
        }
        if let Ok(t) = obj.cast_exact::<PyTuple>() {
            return self.seq(t.iter(), depth);
        }
        self.other(obj, depth)
    }

    /// Everything that is not an exact builtin JSON type.
    #[cold]
    fn other(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
        let py = obj.py();
        let t = self.types;
        if let Some(s) = temporal(obj)? {
            write_str(&mut self.buf, &s);
            return Ok(());
        }
        if obj.is_instance(t.enum_.bind(py))? {
            if depth >= MAX_DEPTH {
                return Err(too_deep());
            }
            return self.value(&obj.getattr(pyo3::intern!(py, "value"))?, depth + 1);
        }
        // Subclasses of builtin types, as json.dumps treats them.
        if let Ok(s) = obj.cast::<PyString>() {
            write_str(&mut self.buf, s.to_str()?);
            return Ok(());
        }
        if let Ok(i) = obj.cast::<PyInt>() {
            return self.int(i);
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            write_float(&mut self.buf, f.value());
            return Ok(());
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            return self.dict(d, depth);
        }
        if let Ok(l) = obj.cast::<PyList>() {
            return self.list(l, depth);
        }
        if let Ok(tu) = obj.cast::<PyTuple>() {
            return self.seq(tu.iter(), depth);
        }
        if obj.is_instance(t.uuid.bind(py))? {
            write_str(&mut self.buf, &uuid_string(obj)?);
            return Ok(());
        }
        if obj.is_instance(t.decimal.bind(py))? {
            write_str(&mut self.buf, obj.str()?.to_str()?);
            return Ok(());
        }
        if let Ok(s) = obj.cast::<PySet>() {
            return self.seq(s.iter(), depth);
        }
        if let Ok(s) = obj.cast::<PyFrozenSet>() {
            return self.seq(s.iter(), depth);
        }
        if let Some(names) = self.dataclass_fields(obj)? {
            return self.dataclass(obj, &names, depth);
        }
        if let Some(base) = base_model(py, t)? {
            if obj.is_instance(base.bind(py))? {
                let json = obj.call_method0(pyo3::intern!(py, "model_dump_json"))?;
                self.buf
                    .extend_from_slice(json.cast::<PyString>()?.to_str()?.as_bytes());
                return Ok(());
            }
        }
        if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
            return Err(PyTypeError::new_err(format!(
                "Object of type {} is not JSON serializable (decode or base64-encode it first)",
                type_name(obj)
            )));
        }
        Err(PyTypeError::new_err(format!(
            "Object of type {} is not JSON serializable",
            type_name(obj)
        )))
    }

    fn int(&mut self, i: &Bound<'_, PyInt>) -> PyResult<()> {
        if let Ok(v) = i.extract::<i64>() {
            self.buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        } else if let Ok(v) = i.extract::<u64>() {
            self.buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        } else {
            // Arbitrary size: int.__repr__, as json.dumps does (also for int subclasses).
            let s = i
                .py()
                .get_type::<PyInt>()
                .call_method1(pyo3::intern!(i.py(), "__repr__"), (i,))?;
            self.buf.extend_from_slice(s.cast::<PyString>()?.to_str()?.as_bytes());
        }
        Ok(())
    }

    fn dict(&mut self, d: &Bound<'_, PyDict>, depth: usize) -> PyResult<()> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let len = d.len();
        if len == 0 {
            self.buf.extend_from_slice(b"{}");
            return Ok(());
        }
        self.buf.push(b'{');
        let mut first = true;
        for (k, v) in d.iter() {
            if !first {
                self.buf.push(b',');
            }
            first = false;
            self.key(&k)?;
            self.buf.push(b':');
            self.value(&v, depth + 1)?;
            // A callback (Enum.value, model_dump_json, ...) may have mutated the dict; stop
            // before PyO3's iterator notices (it would panic).
            if d.len() != len {
                return Err(PyRuntimeError::new_err("dictionary changed size during iteration"));
            }
        }
        self.buf.push(b'}');
        Ok(())
    }

    fn list(&mut self, l: &Bound<'_, PyList>, depth: usize) -> PyResult<()> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        self.buf.push(b'[');
        let mut i = 0;
        // Index loop: tolerant of the list changing size during callbacks.
        while i < l.len() {
            if i > 0 {
                self.buf.push(b',');
            }
            let item = l.get_item(i)?;
            self.value(&item, depth + 1)?;
            i += 1;
        }
        self.buf.push(b']');
        Ok(())
    }

    fn seq<'py>(&mut self, items: impl Iterator<Item = Bound<'py, PyAny>>, depth: usize) -> PyResult<()> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        self.buf.push(b'[');
        for (n, item) in items.enumerate() {
            if n > 0 {
                self.buf.push(b',');
            }
            self.value(&item, depth + 1)?;
        }
        self.buf.push(b']');
        Ok(())
    }

    /// The field names of a dataclass instance (not of a dataclass type), cached per type.
    fn dataclass_fields<'py>(&self, obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let py = obj.py();
        if obj.is_instance_of::<PyType>() {
            return Ok(None);
        }
        let ty = obj.get_type();
        let cache = self.types.dc_cache.bind(py);
        if let Some(names) = cache.get_item(&ty)? {
            return Ok(Some(names.cast_into::<PyTuple>()?));
        }
        let Some(fields) = ty.getattr_opt(pyo3::intern!(py, "__dataclass_fields__"))? else {
            return Ok(None);
        };
        let Ok(fields) = fields.cast_into::<PyDict>() else {
            return Ok(None);
        };
        let marker = self.types.dc_field.bind(py);
        let mut names = Vec::with_capacity(fields.len());
        for (name, field) in fields.iter() {
            if field.getattr(pyo3::intern!(py, "_field_type"))?.is(marker) {
                names.push(name);
            }
        }
        let names = PyTuple::new(py, names)?;
        cache.set_item(&ty, &names)?;
        Ok(Some(names))
    }

    fn dataclass(&mut self, obj: &Bound<'_, PyAny>, names: &Bound<'_, PyTuple>, depth: usize) -> PyResult<()> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        self.buf.push(b'{');
        for (n, name) in names.iter().enumerate() {
            if n > 0 {
                self.buf.push(b',');
            }
            let name = name.cast_into::<PyString>()?;
            write_str(&mut self.buf, name.to_str()?);
            self.buf.push(b':');
            self.value(&obj.getattr(&name)?, depth + 1)?;
        }
        self.buf.push(b'}');
        Ok(())
    }

    /// A dict key, always written as a JSON string.
    fn key(&mut self, k: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(s) = k.cast_exact::<PyString>() {
            write_str(&mut self.buf, s.to_str()?);
            return Ok(());
        }
        self.other_key(k, 0)
    }

    #[cold]
    fn other_key(&mut self, k: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
        let py = k.py();
        let t = self.types;
        let mut tmp = Vec::new();
        if let Ok(b) = k.cast::<PyBool>() {
            tmp.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
        } else if k.is_none() {
            tmp.extend_from_slice(b"null");
        } else if k.is_instance(t.enum_.bind(py))? {
            if depth >= 8 {
                return Err(too_deep());
            }
            return self.other_key(&k.getattr(pyo3::intern!(py, "value"))?, depth + 1);
        } else if let Ok(s) = k.cast::<PyString>() {
            write_str(&mut self.buf, s.to_str()?);
            return Ok(());
        } else if let Ok(i) = k.cast::<PyInt>() {
            let mut w = Writer { buf: tmp, types: t };
            w.int(i)?;
            tmp = w.buf;
        } else if let Ok(f) = k.cast::<PyFloat>() {
            let v = f.value();
            if v.is_nan() {
                tmp.extend_from_slice(b"NaN");
            } else if v.is_infinite() {
                tmp.extend_from_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
            } else {
                write_float(&mut tmp, v);
            }
        } else if let Some(s) = temporal(k)? {
            write_str(&mut self.buf, &s);
            return Ok(());
        } else if k.is_instance(t.uuid.bind(py))? {
            write_str(&mut self.buf, &uuid_string(k)?);
            return Ok(());
        } else if k.is_instance(t.decimal.bind(py))? {
            write_str(&mut self.buf, k.str()?.to_str()?);
            return Ok(());
        } else {
            return Err(PyTypeError::new_err(format!(
                "keys must be str, int, float, bool, None, Enum, UUID, Decimal or a date/time, not {}",
                type_name(k)
            )));
        }
        // Digits and literals need no escaping.
        self.buf.push(b'"');
        self.buf.extend_from_slice(&tmp);
        self.buf.push(b'"');
        Ok(())
    }
}

/// `str(uuid)` from its 128-bit integer.
fn uuid_string(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let v: u128 = obj.getattr(pyo3::intern!(obj.py(), "int"))?.extract()?;
    let h = format!("{v:032x}");
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// ISO 8601 for datetime, date and time (exactly what `isoformat()` returns).
fn temporal(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if let Ok(dt) = obj.cast::<PyDateTime>() {
        let mut s = String::with_capacity(32);
        write_date(&mut s, dt.get_year(), dt.get_month(), dt.get_day());
        s.push('T');
        write_time(
            &mut s,
            dt.get_hour(),
            dt.get_minute(),
            dt.get_second(),
            dt.get_microsecond(),
        );
        if dt.get_tzinfo().is_some() {
            write_offset(&mut s, &dt.call_method0(pyo3::intern!(obj.py(), "utcoffset"))?)?;
        }
        return Ok(Some(s));
    }
    if let Ok(d) = obj.cast::<PyDate>() {
        let mut s = String::with_capacity(10);
        write_date(&mut s, d.get_year(), d.get_month(), d.get_day());
        return Ok(Some(s));
    }
    if let Ok(t) = obj.cast::<PyTime>() {
        let mut s = String::with_capacity(24);
        write_time(
            &mut s,
            t.get_hour(),
            t.get_minute(),
            t.get_second(),
            t.get_microsecond(),
        );
        if t.get_tzinfo().is_some() {
            write_offset(&mut s, &t.call_method0(pyo3::intern!(obj.py(), "utcoffset"))?)?;
        }
        return Ok(Some(s));
    }
    Ok(None)
}

fn write_date(s: &mut String, y: i32, m: u8, d: u8) {
    use std::fmt::Write;
    let _ = write!(s, "{y:04}-{m:02}-{d:02}");
}

fn write_time(s: &mut String, h: u8, m: u8, sec: u8, us: u32) {
    use std::fmt::Write;
    let _ = write!(s, "{h:02}:{m:02}:{sec:02}");
    if us != 0 {
        let _ = write!(s, ".{us:06}");
    }
}

/// `+HH:MM[:SS[.ffffff]]` from a `utcoffset()` result (None → nothing).
fn write_offset(s: &mut String, off: &Bound<'_, PyAny>) -> PyResult<()> {
    use std::fmt::Write;
    if off.is_none() {
        return Ok(());
    }
    let d = off.cast::<PyDelta>()?;
    let mut total_us =
        (i64::from(d.get_days()) * 86_400 + i64::from(d.get_seconds())) * 1_000_000 + i64::from(d.get_microseconds());
    let sign = if total_us < 0 {
        total_us = -total_us;
        '-'
    } else {
        '+'
    };
    let us = total_us % 1_000_000;
    let secs = total_us / 1_000_000;
    let (h, m, sec) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let _ = write!(s, "{sign}{h:02}:{m:02}");
    if sec != 0 || us != 0 {
        let _ = write!(s, ":{sec:02}");
        if us != 0 {
            let _ = write!(s, ".{us:06}");
        }
    }
    Ok(())
}
