//! Configuration types shared by the Python API (`cello._cello`), the data plane
//! (`cello-server`, `cello-dataplane`) and the operator (`CellApp.spec.server`).
//!
//! Every option is defined here once, with serde (camelCase on the wire for the
//! `ServerConfig` sections, snake_case accepted as an alias so Python dicts and `cello.yaml`
//! files written by hand work; the app-level kinds are snake_case), schemars (CRD, JSON Schema
//! and the Python views) and a `validate()` pass. [`kinds`] lists the kinds Python exposes.

mod auth;
mod cache;
mod check;
mod data;
mod deploy;
mod error;
pub mod kinds;
mod messaging;
mod middleware;
mod observability;
mod patterns;
mod protocols;
mod secret;
mod server;
mod tls;
mod web;
mod websocket;

pub use auth::*;
pub use cache::*;
pub use check::check_fields;
pub use data::*;
pub use deploy::*;
pub use error::{Error, Result};
pub use messaging::*;
pub use middleware::*;
pub use observability::*;
pub use patterns::*;
pub use protocols::*;
pub use secret::Secret;
pub use server::*;
pub use tls::*;
pub use web::*;
pub use websocket::*;

pub mod docs;
pub mod env;
