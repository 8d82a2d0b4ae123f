//! `cello._cello`: the PyO3 side of Cello.
//!
//! Modules: [`executor`] (Rust futures <-> the asyncio loop, apart from HTTP),
//! [`runtime`] (the Python endpoint: jobs, drain loop), [`convert`] (handler results → HTTP responses), [`request`] (the
//! lazy `Request` view), [`sink`] (streaming bodies with back-pressure),
//! [`json`] (the JSON codec), [`errors`] (the one error → exception map).

use pyo3::prelude::*;

/// Rust allocations go to mimalloc, which gives freed memory back to the OS after a burst
/// (glibc's per-thread arenas stay at their peak); Python objects keep pymalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod access;
pub mod config;
pub mod convert;
pub mod data;
pub mod errors;
pub mod executor;
pub mod grpc;
pub mod json;
pub mod memory;
pub mod messaging;
pub mod messaging_obs;
pub mod observability;
pub mod queue;
pub mod request;
pub mod runtime;
pub mod session;
pub mod sink;
pub mod templates;
pub mod websocket;

#[pymodule]
fn _cello(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<runtime::Runtime>()?;
    m.add_class::<executor::Executor>()?;
    m.add_class::<runtime::Responder>()?;
    m.add_class::<request::PyRequest>()?;
    m.add_class::<request::headers::Headers>()?;
    m.add_class::<session::PySession>()?;
    m.add_class::<request::form::UploadedFile>()?;
    m.add_class::<sink::BodySink>()?;
    m.add_class::<templates::Templates>()?;
    m.add_class::<websocket::WebSocketConn>()?;
    m.add_class::<grpc::server::GrpcCore>()?;
    m.add_class::<grpc::server::GrpcCall>()?;
    m.add_class::<grpc::client::GrpcClient>()?;
    m.add_class::<grpc::client::GrpcClientStream>()?;
    m.add_class::<grpc::messages::ProtoSchema>()?;
    m.add_class::<grpc::messages::MessageType>()?;
    m.add("GrpcStatusError", m.py().get_type::<grpc::server::GrpcStatusError>())?;
    m.add_function(wrap_pyfunction!(json::dumps, m)?)?;
    m.add_function(wrap_pyfunction!(json::loads, m)?)?;
    m.add_function(wrap_pyfunction!(errors::validate_config, m)?)?;
    m.add_function(wrap_pyfunction!(errors::load_config_file, m)?)?;
    m.add_function(wrap_pyfunction!(errors::normalize_config, m)?)?;
    errors::register(m)?;
    observability::register(m)?;
    config::register(m)?;
    data::register(m)?;
    messaging::register(m)?;
    messaging_obs::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
