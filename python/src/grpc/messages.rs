//! `.proto` files compiled at start-up (protox: no `protoc`) and the messages they define,
//! converted between the protobuf wire format and Python values (prost-reflect's
//! `DynamicMessage`). Conversion runs on the loop thread, where the handler's dicts live.

use std::path::PathBuf;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage, Value};
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyList, PyString};

/// `(method, input, output, client_streaming, server_streaming)`.
type MethodInfo = (String, String, String, bool, bool);

/// A compiled `.proto` file (with its imports): `cello._cello.ProtoSchema(path, includes)`.
#[pyclass(frozen, module = "cello._cello")]
pub struct ProtoSchema {
    pool: DescriptorPool,
    /// The encoded `FileDescriptorSet`, for the reflection service.
    encoded: Vec<u8>,
}

#[pymethods]
impl ProtoSchema {
    /// Compile `path`; imports are looked up in `includes` (default: the file's directory).
    #[new]
    #[pyo3(signature = (path, includes = Vec::new()))]
    fn new(path: PathBuf, includes: Vec<PathBuf>) -> PyResult<Self> {
        let dir = path.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        let mut dirs = includes;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        let mut compiler =
            protox::Compiler::new(dirs).map_err(|e| PyValueError::new_err(format!("{}: {e}", path.display())))?;
        compiler.include_imports(true);
        let name = path.file_name().map(PathBuf::from).unwrap_or_else(|| path.clone());
        compiler
            .open_file(&name)
            .map_err(|e| PyValueError::new_err(format!("cannot compile {}: {e}", path.display())))?;
        let fds = compiler.file_descriptor_set();
        let encoded = fds.encode_to_vec();
        let pool = DescriptorPool::from_file_descriptor_set(fds)
            .map_err(|e| PyValueError::new_err(format!("{}: {e}", path.display())))?;
        Ok(Self { pool, encoded })
    }

    /// `[(service, [(method, input, output, client_streaming, server_streaming)])]`.
    fn services(&self) -> Vec<(String, Vec<MethodInfo>)> {
        self.pool
            .services()
            .map(|s| {
                let methods = s
                    .methods()
                    .map(|m| {
                        (
                            m.name().to_owned(),
                            m.input().full_name().to_owned(),
                            m.output().full_name().to_owned(),
                            m.is_client_streaming(),
                            m.is_server_streaming(),
                        )
                    })
                    .collect();
                (s.full_name().to_owned(), methods)
            })
            .collect()
    }

    /// The message type `full_name` (`package.Message`).
    fn message(&self, full_name: &str) -> PyResult<MessageType> {
        self.pool
            .get_message_by_name(full_name)
            .map(|desc| MessageType { desc })
            .ok_or_else(|| PyKeyError::new_err(format!("no message {full_name}")))
    }

    /// The encoded `FileDescriptorSet` (reflection).
    fn encoded<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.encoded)
    }
}

/// One message type: wire bytes <-> dict.
#[pyclass(frozen, module = "cello._cello")]
pub struct MessageType {
    desc: MessageDescriptor,
}

#[pymethods]
impl MessageType {
    /// The full name (`package.Message`).
    #[getter]
    fn name(&self) -> String {
        self.desc.full_name().to_owned()
    }

    /// Wire bytes -> dict (every field; unset fields with presence are left out).
    fn decode(&self, py: Python<'_>, data: &[u8]) -> PyResult<Py<PyAny>> {
        let msg = DynamicMessage::decode(self.desc.clone(), data)
            .map_err(|e| PyValueError::new_err(format!("not a valid {}: {e}", self.desc.full_name())))?;
        Ok(message_to_py(py, &msg)?.into_any().unbind())
    }

    /// Dict (a mapping of field names) -> wire bytes.
    fn encode<'py>(&self, py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let msg = message_from_py(&self.desc, value)?;
        Ok(PyBytes::new(py, &msg.encode_to_vec()))
    }
}

fn message_to_py<'py>(py: Python<'py>, msg: &DynamicMessage) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for field in msg.descriptor().fields() {
        if field.supports_presence() && !msg.has_field(&field) {
            continue;
        }
        let value = msg.get_field(&field);
        out.set_item(field.name(), value_to_py(py, &value, &field.kind())?)?;
    }
    Ok(out)
}

fn value_to_py<'py>(py: Python<'py>, value: &Value, kind: &Kind) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::I32(n) => n.into_pyobject(py)?.into_any(),
        Value::I64(n) => n.into_pyobject(py)?.into_any(),
        Value::U32(n) => n.into_pyobject(py)?.into_any(),
        Value::U64(n) => n.into_pyobject(py)?.into_any(),
        Value::F32(n) => f64::from(*n).into_pyobject(py)?.into_any(),
        Value::F64(n) => n.into_pyobject(py)?.into_any(),
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        // Enum values by name, as protobuf's MessageToDict does; an unknown number stays a number.
        Value::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(v) => PyString::new(py, v.name()).into_any(),
            None => n.into_pyobject(py)?.into_any(),
        },
        Value::Message(m) => message_to_py(py, m)?.into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item, kind)?)?;
            }
            list.into_any()
        }
        Value::Map(map) => {
            let dict = PyDict::new(py);
            let value_kind = kind
                .as_message()
                .map(|entry| entry.map_entry_value_field().kind())
                .unwrap_or_else(|| kind.clone());
            for (k, v) in map {
                let key = match k {
                    MapKey::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
                    MapKey::I32(n) => n.into_pyobject(py)?.into_any(),
                    MapKey::I64(n) => n.into_pyobject(py)?.into_any(),
                    MapKey::U32(n) => n.into_pyobject(py)?.into_any(),
                    MapKey::U64(n) => n.into_pyobject(py)?.into_any(),
                    MapKey::String(s) => PyString::new(py, s).into_any(),
                };
                dict.set_item(key, value_to_py(py, v, &value_kind)?)?;
            }
            dict.into_any()
        }
    })
}

fn message_from_py(desc: &MessageDescriptor, value: &Bound<'_, PyAny>) -> PyResult<DynamicMessage> {
    let dict = value.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "a {} must be a dict, not {}",
            desc.full_name(),
            value.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    let mut msg = DynamicMessage::new(desc.clone());
    for (k, v) in dict.iter() {
        let name: String = k.extract()?;
        let Some(field) = desc.get_field_by_name(&name) else {
            return Err(PyValueError::new_err(format!(
                "{} has no field {name:?}",
                desc.full_name()
            )));
        };
        if v.is_none() {
            continue;
        }
        let kind = field.kind();
        let value = if field.is_map() {
            let entry = kind
                .as_message()
                .ok_or_else(|| PyValueError::new_err("map field without an entry type"))?;
            let (key_kind, value_kind) = (entry.map_entry_key_field().kind(), entry.map_entry_value_field().kind());
            let d = v
                .cast::<PyDict>()
                .map_err(|_| PyTypeError::new_err(format!("{}.{name} must be a dict", desc.full_name())))?;
            let mut map = std::collections::HashMap::new();
            for (mk, mv) in d.iter() {
                let key = match scalar_from_py(&key_kind, &mk, &name)? {
                    Value::Bool(b) => MapKey::Bool(b),
                    Value::I32(n) => MapKey::I32(n),
                    Value::I64(n) => MapKey::I64(n),
                    Value::U32(n) => MapKey::U32(n),
                    Value::U64(n) => MapKey::U64(n),
                    Value::String(s) => MapKey::String(s),
                    _ => return Err(PyTypeError::new_err(format!("bad map key for {name}"))),
                };
                map.insert(key, scalar_from_py(&value_kind, &mv, &name)?);
            }
            Value::Map(map)
        } else if field.is_list() {
            let mut items = Vec::new();
            for item in v.try_iter()? {
                items.push(scalar_from_py(&kind, &item?, &name)?);
            }
            Value::List(items)
        } else {
            scalar_from_py(&kind, &v, &name)?
        };
        msg.try_set_field(&field, value)
            .map_err(|e| PyValueError::new_err(format!("{}.{name}: {e}", desc.full_name())))?;
    }
    Ok(msg)
}

fn scalar_from_py(kind: &Kind, v: &Bound<'_, PyAny>, name: &str) -> PyResult<Value> {
    let wrong = |what: &str| PyTypeError::new_err(format!("field {name:?} takes {what}"));
    Ok(match kind {
        Kind::Double => Value::F64(v.extract().map_err(|_| wrong("a float"))?),
        Kind::Float => Value::F32(v.extract().map_err(|_| wrong("a float"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(v.extract().map_err(|_| wrong("a 32-bit int"))?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(v.extract().map_err(|_| wrong("a 64-bit int"))?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(v.extract().map_err(|_| wrong("an unsigned 32-bit int"))?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(v.extract().map_err(|_| wrong("an unsigned 64-bit int"))?),
        Kind::Bool => Value::Bool(v.cast::<PyBool>().map_err(|_| wrong("a bool"))?.is_true()),
        Kind::String => Value::String(v.extract().map_err(|_| wrong("a str"))?),
        Kind::Bytes => {
            if let Ok(b) = v.cast::<PyBytes>() {
                Value::Bytes(bytes::Bytes::copy_from_slice(b.as_bytes()))
            } else if let Ok(b) = v.cast::<PyByteArray>() {
                Value::Bytes(bytes::Bytes::from(b.to_vec()))
            } else {
                return Err(wrong("bytes"));
            }
        }
        Kind::Message(desc) => Value::Message(message_from_py(desc, v)?),
        Kind::Enum(desc) => {
            if let Ok(n) = v.extract::<i32>() {
                Value::EnumNumber(n)
            } else if let Ok(s) = v.extract::<String>() {
                let value = desc
                    .get_value_by_name(&s)
                    .ok_or_else(|| PyValueError::new_err(format!("{s:?} is not a value of {}", desc.full_name())))?;
                Value::EnumNumber(value.number())
            } else {
                return Err(wrong("an enum name or number"));
            }
        }
    })
}
