//! The config kinds of `cello-config` for the Python views in `cello/config.py`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Every config kind (`cello_config::kinds::describe`) as JSON: fields in constructor order,
/// defaults and the JSON Schema of each field.
#[pyfunction]
fn config_kinds() -> String {
    cello_config::kinds::describe().to_string()
}

/// Run the Rust `validate()` of the kind `name` on a JSON value; raise `ValueError` with
/// its message. Returns the value with every field filled in, as JSON.
#[pyfunction]
fn validate_config_kind(name: &str, json: &str) -> PyResult<String> {
    cello_config::kinds::validate(name, json).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A `Content-Security-Policy` value from `{"directives": {...}}`, in the canonical order.
#[pyfunction]
fn csp_build(json: &str) -> PyResult<String> {
    let csp: cello_config::CspConfig = serde_json::from_str(json).map_err(|e| PyValueError::new_err(e.to_string()))?;
    csp.validate().map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(csp.build())
}

/// One CSP source, quoted when it is a keyword (`self` → `'self'`, `nonce-…`); `ValueError`
/// when it could break out of its directive.
#[pyfunction]
fn csp_source(source: &str) -> PyResult<String> {
    cello_config::CspConfig::source(source).map_err(|e| PyValueError::new_err(e.to_string()))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(config_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(validate_config_kind, m)?)?;
    m.add_function(wrap_pyfunction!(csp_build, m)?)?;
    m.add_function(wrap_pyfunction!(csp_source, m)?)?;
    m.add_function(wrap_pyfunction!(env_vars, m)?)?;
    Ok(())
}

/// Every `CELLO_*` variable (`cello_config::env::VARS`) as JSON, for `cello._env`.
#[pyfunction]
fn env_vars() -> PyResult<String> {
    serde_json::to_string(cello_config::env::VARS).map_err(|e| PyValueError::new_err(e.to_string()))
}
