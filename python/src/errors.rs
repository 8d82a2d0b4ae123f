//! The one place where Rust errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;

create_exception!(cello, CelloError, PyException, "Base class of Cello's own errors.");
create_exception!(cello, ConfigError, CelloError, "Invalid configuration.");
create_exception!(
    cello,
    JsonDecodeError,
    pyo3::exceptions::PyValueError,
    "A request body is not valid JSON; handlers that let it propagate answer 400."
);

create_exception!(
    cello,
    TemplateError,
    CelloError,
    "A template failed to parse or render."
);
create_exception!(
    cello,
    TemplateNotFound,
    TemplateError,
    "No template of that name in the template directory."
);

/// Map a template error; the message carries minijinja's location and source excerpt.
pub fn template_err(e: minijinja::Error) -> PyErr {
    let mut msg = e.to_string();
    if let Some(detail) = e
        .display_debug_info()
        .to_string()
        .lines()
        .next()
        .filter(|l| !l.is_empty())
    {
        msg = format!("{msg} ({detail})");
    }
    match e.kind() {
        minijinja::ErrorKind::TemplateNotFound => TemplateNotFound::new_err(msg),
        _ => TemplateError::new_err(msg),
    }
}

/// Map a data-plane error to a Python exception.
pub fn server_err(e: cello_server::Error) -> PyErr {
    match e {
        cello_server::Error::Bind { .. } | cello_server::Error::Io(_) => PyOSError::new_err(e.to_string()),
        cello_server::Error::Route { .. } => PyValueError::new_err(e.to_string()),
        cello_server::Error::Config(c) => config_err(c),
        // Unusable certificate/key/CA files: a configuration problem.
        cello_server::Error::Tls(_) => ConfigError::new_err(e.to_string()),
    }
}

/// Map a configuration error to `ConfigError` (a `ValueError` subclass in Python's eyes too).
pub fn config_err(e: cello_config::Error) -> PyErr {
    ConfigError::new_err(e.to_string())
}

/// Validate a server configuration given as JSON; raise `ConfigError` naming the field.
#[pyfunction]
pub fn validate_config(config_json: &str) -> PyResult<()> {
    cello_config::ServerConfig::from_json(config_json)
        .map(|_| ())
        .map_err(config_err)
}

/// Read and validate a `cello.yaml` (as the operator mounts it); returns the full
/// configuration as camelCase JSON. Errors name the file and the field.
#[pyfunction]
pub fn load_config_file(path: std::path::PathBuf) -> PyResult<String> {
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::new_err(format!("cannot read {}: {e}", path.display())))?;
    let config = cello_config::ServerConfig::from_yaml(&text)
        .map_err(|e| ConfigError::new_err(format!("{}: {e}", path.display())))?;
    serde_json::to_string(&config).map_err(|e| ConfigError::new_err(e.to_string()))
}

/// A configuration (JSON, snake_case or camelCase keys) with every field filled in,
/// as camelCase JSON.
#[pyfunction]
pub fn normalize_config(config_json: &str) -> PyResult<String> {
    let config = cello_config::ServerConfig::from_json(config_json).map_err(config_err)?;
    serde_json::to_string(&config).map_err(|e| ConfigError::new_err(e.to_string()))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CelloError", py.get_type::<CelloError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("JsonDecodeError", py.get_type::<JsonDecodeError>())?;
    m.add("TemplateError", py.get_type::<TemplateError>())?;
    m.add("TemplateNotFound", py.get_type::<TemplateNotFound>())?;
    Ok(())
}
