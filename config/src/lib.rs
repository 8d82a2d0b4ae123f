//! Configuration types shared by the Python API (`cello._cello`), the data plane
//! (`cello-server`, `cello-dataplane`) and the operator (`CellApp.spec.server`).
//!
//! Every option is defined here once, with serde (camelCase on the wire, snake_case
//! accepted as an alias so Python dicts and `cello.yaml` files written by hand work),
//! schemars (CRD and JSON Schema generation) and one [`ServerConfig::validate`] pass.

mod error;
mod observability;
mod server;

pub use error::{Error, Result};
pub use observability::*;
pub use server::*;
