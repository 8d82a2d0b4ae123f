//! Cello's data plane: a tokio + hyper server with a compiled router and the
//! framework's protocol behaviour (limits, timeouts, HEAD/OPTIONS/405, problem+json).
//!
//! It has no Python dependency. Handlers are reached through the [`Endpoint`] trait,
//! which `cello-py` implements for Python callables and `cello-dataplane` implements
//! as a reverse proxy.
//!
//! Modules: [`router`] (route table), [`service`] (per-request pipeline),
//! [`serve`] (listener, connections, shutdown), [`body`] (response bodies),
//! [`files`] (file and range responses), [`problem`] (RFC 7807 responses),
//! [`metrics`] (Prometheus), [`telemetry`] (OpenTelemetry traces), [`health`] (probes).

pub mod body;
pub mod endpoint;
pub mod error;
pub mod files;
pub mod health;
pub mod metrics;
pub mod problem;
pub mod proxy;
pub mod router;
pub mod serve;
pub mod service;
pub mod telemetry;

pub use body::ResponseBody;
pub use endpoint::{Endpoint, RoutedRequest};
pub use error::{Error, Result};
pub use router::{Router, RouterBuilder};
pub use serve::{Server, ShutdownHandle};
pub use service::AppState;
