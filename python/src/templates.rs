//! Jinja2-syntax templates rendered by minijinja.
//!
//! `Templates` owns one `minijinja::Environment` that loads from a directory (inheritance,
//! includes, imports and macros resolve there). Contexts are converted from Python once per
//! render: dicts, lists, strings and numbers become minijinja values; any other object (a
//! pydantic model, a dataclass, a function) is wrapped, so attribute access, method calls
//! and calls reach Python lazily. Rendering runs with the GIL held: templates call back into
//! Python objects, and the render itself is short.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use minijinja::value::{Enumerator, Object, ObjectRepr, Rest, Value, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, State};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::template_err;

/// The name minijinja gives templates rendered from a string.
const STRING_TEMPLATE: &str = "<string>";

/// A Python object seen from a template: attributes/items on lookup, calls go to Python.
#[derive(Debug)]
struct PyValue(Py<PyAny>);

/// A Python callable that wants the template's `request` variable as its first argument
/// (marked with `__cello_pass_request__`, e.g. `csrf_token()`).
#[derive(Debug)]
struct PyRequestFn(Py<PyAny>);

fn to_mj_err(e: PyErr) -> minijinja::Error {
    Python::attach(|py| minijinja::Error::new(ErrorKind::InvalidOperation, format!("Python raised {}", e.value(py))))
}

impl Object for PyValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        Python::attach(|py| {
            let obj = self.0.bind(py);
            if obj.hasattr("keys").unwrap_or(false) && obj.hasattr("__getitem__").unwrap_or(false) {
                ObjectRepr::Map
            } else if obj.hasattr("__iter__").unwrap_or(false) && !obj.is_instance_of::<PyString>() {
                ObjectRepr::Iterable
            } else {
                ObjectRepr::Plain
            }
        })
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Python::attach(|py| {
            let obj = self.0.bind(py);
            if let Some(name) = key.as_str() {
                if !name.starts_with('_') {
                    if let Ok(v) = obj.getattr(name) {
                        return Some(to_value(&v));
                    }
                }
            }
            let pykey = from_value(py, key).ok()?;
            obj.get_item(pykey).ok().map(|v| to_value(&v))
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Python::attach(|py| {
            let obj = self.0.bind(py);
            let iterable = if obj.hasattr("keys").unwrap_or(false) {
                obj.call_method0("keys").ok()
            } else {
                Some(obj.clone())
            };
            let Some(iter) = iterable.and_then(|it| it.try_iter().ok()) else {
                return Enumerator::NonEnumerable;
            };
            let items: Vec<Value> = iter.filter_map(Result::ok).map(|v| to_value(&v)).collect();
            Enumerator::Values(items)
        })
    }

    fn is_true(self: &Arc<Self>) -> bool {
        Python::attach(|py| self.0.bind(py).is_truthy().unwrap_or(true))
    }

    fn call(self: &Arc<Self>, _state: &State<'_, '_>, args: &[Value]) -> Result<Value, minijinja::Error> {
        Python::attach(|py| call_python(py, self.0.bind(py), None, args))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        Python::attach(|py| {
            let obj = self.0.bind(py);
            if method.starts_with('_') {
                return Err(minijinja::Error::from(ErrorKind::UnknownMethod));
            }
            match obj.getattr(method) {
                Ok(f) if f.is_callable() => call_python(py, &f, None, args),
                _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
            }
        })
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = Python::attach(|py| {
            self.0
                .bind(py)
                .str()
                .map(|s| s.to_string())
                .unwrap_or_else(|_| "<unprintable>".to_owned())
        });
        f.write_str(&text)
    }
}

impl Object for PyRequestFn {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn call(self: &Arc<Self>, state: &State<'_, '_>, args: &[Value]) -> Result<Value, minijinja::Error> {
        let request = state.lookup("request").unwrap_or_default();
        Python::attach(|py| {
            let request = from_value(py, &request).map_err(to_mj_err)?;
            call_python(py, self.0.bind(py), Some(request), args)
        })
    }
}

/// Call `f` with template arguments (the trailing kwargs become keyword arguments).
fn call_python(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    first: Option<Bound<'_, PyAny>>,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    let (positional, kwargs) = match args.split_last() {
        Some((last, rest)) if last.is_kwargs() => (rest, Some(last)),
        _ => (args, None),
    };
    let mut items: Vec<Bound<'_, PyAny>> = Vec::with_capacity(positional.len() + 1);
    items.extend(first);
    for a in positional {
        items.push(from_value(py, a).map_err(to_mj_err)?);
    }
    let tuple = PyTuple::new(py, items).map_err(to_mj_err)?;
    let kw = match kwargs {
        Some(k) => Some(
            from_value(py, k)
                .map_err(to_mj_err)?
                .cast_into::<PyDict>()
                .map_err(|e| to_mj_err(e.into()))?,
        ),
        None => None,
    };
    let result = f.call(tuple, kw.as_ref()).map_err(to_mj_err)?;
    Ok(to_value(&result))
}

/// Python → minijinja. Plain data is copied; anything else is wrapped.
pub fn to_value(obj: &Bound<'_, PyAny>) -> Value {
    if obj.is_none() {
        return Value::from(());
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Value::from(b.is_true());
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Value::from(v);
        }
        if let Ok(v) = i.extract::<i128>() {
            return Value::from(v);
        }
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Value::from(f.value());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        let text = s.to_string_lossy().into_owned();
        // markupsafe.Markup (and any `__html__` str subclass) is already escaped.
        if !obj.is_exact_instance_of::<PyString>() && obj.hasattr("__html__").unwrap_or(false) {
            return Value::from_safe_string(text);
        }
        return Value::from(text);
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        if d.is_exact_instance_of::<PyDict>() {
            return Value::from_iter(d.iter().map(|(k, v)| (to_value(&k), to_value(&v))));
        }
    }
    if obj.is_exact_instance_of::<PyList>() || obj.is_exact_instance_of::<PyTuple>() {
        if let Ok(iter) = obj.try_iter() {
            return Value::from(iter.filter_map(Result::ok).map(|v| to_value(&v)).collect::<Vec<_>>());
        }
    }
    if obj.hasattr("__html__").unwrap_or(false) {
        if let Ok(html) = obj.call_method0("__html__") {
            return Value::from_safe_string(html.to_string());
        }
    }
    if obj.hasattr("__cello_pass_request__").unwrap_or(false) {
        return Value::from_object(PyRequestFn(obj.clone().unbind()));
    }
    Value::from_object(PyValue(obj.clone().unbind()))
}

/// minijinja → Python (arguments of calls from templates).
fn from_value<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    if let Some(obj) = v.downcast_object_ref::<PyValue>() {
        return Ok(obj.0.bind(py).clone());
    }
    Ok(match v.kind() {
        ValueKind::Undefined | ValueKind::None => py.None().into_bound(py),
        ValueKind::Bool => PyBool::new(py, v.is_true()).to_owned().into_any(),
        ValueKind::Number => {
            if let Some(i) = v.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else {
                let f = f64::try_from(v.clone()).map_err(|e| PyTypeError::new_err(e.to_string()))?;
                PyFloat::new(py, f).into_any()
            }
        }
        ValueKind::String => PyString::new(py, v.as_str().unwrap_or_default()).into_any(),
        ValueKind::Map => {
            let d = PyDict::new(py);
            let keys = v.try_iter().map_err(|e| PyTypeError::new_err(e.to_string()))?;
            for k in keys {
                let item = v.get_item(&k).map_err(|e| PyTypeError::new_err(e.to_string()))?;
                d.set_item(from_value(py, &k)?, from_value(py, &item)?)?;
            }
            d.into_any()
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items = v.try_iter().map_err(|e| PyTypeError::new_err(e.to_string()))?;
            let list = PyList::empty(py);
            for item in items {
                list.append(from_value(py, &item)?)?;
            }
            list.into_any()
        }
        _ => PyString::new(py, &v.to_string()).into_any(),
    })
}

fn context_value(context: Option<&Bound<'_, PyAny>>) -> PyResult<Value> {
    match context {
        None => Ok(Value::from_iter(std::iter::empty::<(Value, Value)>())),
        Some(c) if c.is_none() => Ok(Value::from_iter(std::iter::empty::<(Value, Value)>())),
        Some(c) => {
            let d = c
                .cast::<PyDict>()
                .map_err(|_| PyTypeError::new_err("a template context must be a dict"))?;
            Ok(Value::from_iter(d.iter().map(|(k, v)| (to_value(&k), to_value(&v)))))
        }
    }
}

/// HTML-escape like Jinja2's MarkupSafe (`& < > " '`): minijinja also escapes `/`, which
/// turns every URL in an attribute into `&#x2f;` noise.
fn markupsafe_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn markupsafe_formatter(out: &mut minijinja::Output, state: &State, value: &Value) -> Result<(), minijinja::Error> {
    let plain = matches!(value.kind(), ValueKind::Undefined | ValueKind::None);
    if state.auto_escape() != AutoEscape::Html || value.is_safe() || plain {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = markupsafe_escape(&value.to_string());
    fmt::Write::write_str(out, &text).map_err(|_| minijinja::Error::from(ErrorKind::WriteFailure))
}

fn escape_filter(value: &Value) -> Value {
    if value.is_safe() {
        return value.clone();
    }
    Value::from_safe_string(markupsafe_escape(&value.to_string()))
}

/// A template environment: `Templates(directory, auto_escape)`.
///
/// Renders share a read lock (threads of the pool may render at once). Locks are taken with
/// the GIL released: a render calls Python, which may hand the GIL to a thread that is
/// waiting for this lock.
#[pyclass(frozen, module = "cello._cello")]
pub struct Templates {
    env: RwLock<Environment<'static>>,
    reload: AtomicBool,
}

impl Templates {
    // Guards are not `Send`, so they cannot be taken inside `detach`: try, and yield with
    // the GIL released while someone else holds the lock.
    fn read<'a>(&'a self, py: Python<'_>) -> RwLockReadGuard<'a, Environment<'static>> {
        loop {
            match self.env.try_read() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => py.detach(std::thread::yield_now),
            }
        }
    }

    fn write<'a>(&'a self, py: Python<'_>) -> RwLockWriteGuard<'a, Environment<'static>> {
        loop {
            match self.env.try_write() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => py.detach(std::thread::yield_now),
            }
        }
    }
}

#[pymethods]
impl Templates {
    #[new]
    #[pyo3(signature = (directory=None, auto_escape=true))]
    fn new(directory: Option<PathBuf>, auto_escape: bool) -> Self {
        let mut env = Environment::new();
        if let Some(dir) = directory {
            env.set_loader(minijinja::path_loader(dir));
        }
        env.set_auto_escape_callback(move |name| {
            if !auto_escape {
                AutoEscape::None
            } else if name == STRING_TEMPLATE {
                AutoEscape::Html
            } else {
                // By extension: .html/.htm/.xml escape (also .html.j2 and friends).
                minijinja::default_auto_escape_callback(name)
            }
        });
        env.set_formatter(markupsafe_formatter);
        // Python's str/dict/list methods (`d.items()`, `s.upper()`, ...), as Jinja2 users write them.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("escape", escape_filter);
        env.add_filter("e", escape_filter);
        Self {
            env: RwLock::new(env),
            reload: AtomicBool::new(false),
        }
    }

    /// Re-read templates from disk on every render (development).
    #[setter]
    fn set_reload(&self, reload: bool) {
        self.reload.store(reload, Ordering::Relaxed);
    }

    #[getter]
    fn reload(&self) -> bool {
        self.reload.load(Ordering::Relaxed)
    }

    /// A variable or function every template sees.
    fn add_global(&self, py: Python<'_>, name: String, value: &Bound<'_, PyAny>) {
        let value = to_value(value);
        self.write(py).add_global(name, value);
    }

    /// A filter backed by a Python callable: `{{ value | name(arg) }}` calls `func(value, arg)`.
    fn add_filter(&self, py: Python<'_>, name: String, func: Py<PyAny>) {
        let func = Arc::new(func);
        self.write(py)
            .add_filter(name, move |args: Rest<Value>| -> Result<Value, minijinja::Error> {
                Python::attach(|py| call_python(py, func.bind(py), None, &args))
            });
    }

    #[pyo3(signature = (name, context=None))]
    fn render(&self, py: Python<'_>, name: &str, context: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
        let ctx = context_value(context)?;
        if self.reload.load(Ordering::Relaxed) {
            self.write(py).clear_templates();
        }
        let env = self.read(py);
        let tmpl = env.get_template(name).map_err(template_err)?;
        tmpl.render(ctx).map_err(template_err)
    }

    #[pyo3(signature = (source, context=None))]
    fn render_string(&self, py: Python<'_>, source: &str, context: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
        let ctx = context_value(context)?;
        self.read(py).render_str(source, ctx).map_err(template_err)
    }
}
