//! JSON bytes → Python objects: simd-json builds a tape, which is walked once to create
//! the Python objects (object key order is kept, duplicate keys: the last one wins, as in
//! `json.loads`).
//!
//! simd-json rejects integers beyond 64 bits and floats that overflow a double; for those
//! rare documents (and only then) the parse falls back to Python's `json.loads`, which
//! gives exact big ints, so results always equal `json.loads` (except that non-finite
//! numbers, `1e999999`, `NaN`, `Infinity`, are refused: JSON has none, and they would be
//! echoed as `null`).
//!
//! Containers nested deeper than [`MAX_DEPTH`] are refused, so the writer can always
//! echo what was read.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString};
use simd_json::{ErrorType, Node, StaticNode};

use super::scan::{byte_offset, first_too_deep, line_col};
use super::MAX_DEPTH;
use crate::errors::JsonDecodeError;

/// Parse JSON text into Python objects; malformed input raises `JsonDecodeError` with the
/// line and column.
pub fn parse<'py>(py: Python<'py>, input: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let input = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
    if input.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return Err(decode_error(
            py,
            input,
            input.len(),
            "expected a JSON value, found the end of the input",
        ));
    }
    let mut buf = input.to_vec();
    let tape = match simd_json::to_tape(&mut buf) {
        Ok(t) => t,
        Err(e) => {
            if matches!(e.error(), ErrorType::InvalidNumber | ErrorType::InvalidExponent) {
                return python_fallback(py, input);
            }
            if matches!(e.error(), ErrorType::DepthLimitExceeded) {
                return Err(too_deep(py, input));
            }
            return Err(diagnose(py, input, &e));
        }
    };
    let mut pos = 0usize;
    let mut keys = KeyCache::default();
    build(py, &tape.0, &mut pos, &mut keys, 0).map_err(|e| e.unwrap_or_else(|| too_deep(py, input)))
}

/// The error for input nested deeper than [`MAX_DEPTH`], at the first byte too deep.
#[cold]
fn too_deep(py: Python<'_>, input: &[u8]) -> PyErr {
    let at = first_too_deep(input, MAX_DEPTH).unwrap_or(0);
    decode_error(
        py,
        input,
        at,
        &format!("nesting too deep (more than {MAX_DEPTH} levels)"),
    )
}

/// Object keys repeat (arrays of records): reuse one Python string per distinct short key,
/// which saves an allocation and a hash computation per occurrence, as `json.loads` does.
type KeyCache<'t, 'py> = HashMap<&'t str, Bound<'py, PyString>, BuildHasherDefault<Fnv>>;
const KEY_CACHE_MAX_LEN: usize = 64;
const KEY_CACHE_MAX_ENTRIES: usize = 4096;

/// FNV-1a: short keys, no DoS concern (the cache is per document and bounded).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

fn key<'t, 'py>(py: Python<'py>, k: &'t str, cache: &mut KeyCache<'t, 'py>) -> Bound<'py, PyString> {
    if k.len() > KEY_CACHE_MAX_LEN {
        return PyString::new(py, k);
    }
    if let Some(s) = cache.get(k) {
        return s.clone();
    }
    let s = PyString::new(py, k);
    if cache.len() < KEY_CACHE_MAX_ENTRIES {
        cache.insert(k, s.clone());
    }
    s
}

fn build<'t, 'py>(
    py: Python<'py>,
    nodes: &[Node<'t>],
    pos: &mut usize,
    keys: &mut KeyCache<'t, 'py>,
    depth: usize,
) -> Result<Bound<'py, PyAny>, Option<PyErr>> {
    let Some(node) = nodes.get(*pos) else {
        return Err(Some(JsonDecodeError::new_err("invalid JSON: truncated document")));
    };
    if matches!(node, Node::Array { .. } | Node::Object { .. }) && depth >= MAX_DEPTH {
        return Err(None); // `None`: too deep (the caller builds the error with a position)
    }
    *pos += 1;
    Ok(match *node {
        Node::String(s) => PyString::new(py, s).into_any(),
        Node::Static(StaticNode::Null) => py.None().into_bound(py),
        Node::Static(StaticNode::Bool(b)) => PyBool::new(py, b).to_owned().into_any(),
        Node::Static(StaticNode::I64(i)) => {
            let Ok(v) = i.into_pyobject(py);
            v.into_any()
        }
        Node::Static(StaticNode::U64(u)) => {
            let Ok(v) = u.into_pyobject(py);
            v.into_any()
        }
        Node::Static(StaticNode::F64(f)) => PyFloat::new(py, f).into_any(),
        Node::Array { len, .. } => {
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(build(py, nodes, pos, keys, depth + 1)?);
            }
            PyList::new(py, items)?.into_any()
        }
        Node::Object { len, .. } => {
            let d = PyDict::new(py);
            for _ in 0..len {
                let key = match nodes.get(*pos) {
                    Some(Node::String(k)) => key(py, k, keys),
                    _ => {
                        return Err(Some(JsonDecodeError::new_err(
                            "invalid JSON: object key is not a string",
                        )))
                    }
                };
                *pos += 1;
                d.set_item(key, build(py, nodes, pos, keys, depth + 1)?)?;
            }
            d.into_any()
        }
    })
}

/// Documents simd-json cannot represent (huge numbers): parse them with `json.loads`.
#[cold]
fn python_fallback<'py>(py: Python<'py>, input: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let json = py.import("json")?;
    let text = match std::str::from_utf8(input) {
        Ok(t) => t,
        Err(e) => return Err(decode_error(py, input, e.valid_up_to(), "invalid UTF-8")),
    };
    if first_too_deep(input, MAX_DEPTH).is_some() {
        return Err(too_deep(py, input));
    }
    // `json.loads` turns `1e999999` into `inf` and accepts `NaN`/`Infinity`: refuse them.
    let kwargs = pyo3::types::PyDict::new(py);
    let finite = pyo3::types::PyCFunction::new_closure(py, None, None, |args, _| -> PyResult<f64> {
        let text: String = args.get_item(0)?.extract()?;
        let v: f64 = args.py().get_type::<PyFloat>().call1((text.as_str(),))?.extract()?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(pyo3::exceptions::PyValueError::new_err(format!(
                "number out of range: {}",
                text.chars().take(40).collect::<String>()
            )))
        }
    })?;
    let constant = pyo3::types::PyCFunction::new_closure(py, None, None, |args, _| -> PyResult<f64> {
        let text: String = args.get_item(0)?.extract()?;
        Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{text} is not valid JSON"
        )))
    })?;
    kwargs.set_item("parse_float", finite)?;
    kwargs.set_item("parse_constant", constant)?;
    match json.call_method("loads", (text,), Some(&kwargs)) {
        Ok(v) => Ok(v),
        Err(err) => {
            let value = err.value(py);
            if err.is_instance(py, &json.getattr("JSONDecodeError")?) {
                let pos: usize = value.getattr("pos")?.extract()?;
                let msg: String = value.getattr("msg")?.extract()?;
                // `pos` counts characters; turn it into a byte offset.
                let at = text.char_indices().nth(pos).map_or(text.len(), |(b, _)| b);
                Err(decode_error(py, input, at, &msg))
            } else {
                Err(JsonDecodeError::new_err(format!("invalid JSON: {value}")))
            }
        }
    }
}

/// The error for a document simd-json rejected. simd-json's offsets are exact for most
/// errors but not all (trailing data, control characters in strings), and its error kinds
/// are terse, so this cold path re-reads the document with serde_json, which reports a
/// precise position and a readable message; simd-json's own report is the fallback.
#[cold]
fn diagnose(py: Python<'_>, input: &[u8], e: &simd_json::Error) -> PyErr {
    if let Err(se) = serde_json::from_slice::<serde_json::Value>(input) {
        let text = se.to_string();
        let msg = text.rfind(" at line ").map_or(text.as_str(), |p| &text[..p]);
        let at = byte_offset(input, se.line(), se.column());
        return decode_error(py, input, at, msg);
    }
    decode_error(py, input, e.index().min(input.len()), &describe(e))
}

/// A human description of a simd-json error.
fn describe(e: &simd_json::Error) -> String {
    let what = match e.error() {
        ErrorType::Eof => "unexpected end of the input",
        ErrorType::TrailingData => "extra data after the JSON value",
        ErrorType::InvalidEscape | ErrorType::InvalidUnicodeEscape => "invalid escape sequence in a string",
        ErrorType::InvalidUnicodeCodepoint => "invalid unicode code point in a string",
        ErrorType::InvalidUtf8 => "invalid UTF-8",
        ErrorType::UnterminatedString => "unterminated string",
        ErrorType::ExpectedObjectColon => "expected ':' after an object key",
        ErrorType::ExpectedMapComma => "expected ',' or '}' in an object",
        ErrorType::ExpectedArrayComma => "expected ',' or ']' in an array",
        ErrorType::ExpectedObjectKey | ErrorType::KeyMustBeAString | ErrorType::BadKeyType => {
            "expected a string object key"
        }
        ErrorType::DepthLimitExceeded => "nesting too deep",
        ErrorType::InputTooLarge => "input too large",
        ErrorType::ExpectedNull | ErrorType::ExpectedTrue | ErrorType::ExpectedFalse | ErrorType::ExpectedBoolean => {
            "invalid literal"
        }
        _ => "unexpected character",
    };
    match e.character() {
        Some(c) if !c.is_control() && c != '\0' => format!("{what} ({c:?})"),
        _ => what.to_owned(),
    }
}

/// `JsonDecodeError("invalid JSON at line L, column C: msg")` with `lineno`, `colno`, `pos`
/// (byte offset) and `msg` attributes, like `json.JSONDecodeError`.
fn decode_error(py: Python<'_>, input: &[u8], at: usize, msg: &str) -> PyErr {
    let (line, col) = line_col(input, at);
    let err = JsonDecodeError::new_err(format!("invalid JSON at line {line}, column {col}: {msg}"));
    let v = err.value(py);
    let _ = v.setattr("msg", msg);
    let _ = v.setattr("lineno", line);
    let _ = v.setattr("colno", col);
    let _ = v.setattr("pos", at);
    err
}
