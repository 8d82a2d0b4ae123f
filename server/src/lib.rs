//! Cello's data plane: a tokio + hyper server with a compiled router and the
//! framework's protocol behaviour (limits, timeouts, HEAD/OPTIONS/405, problem+json).
//!
//! It has no Python dependency. Handlers are reached through the [`Endpoint`] trait,
//! which `cello-py` implements for Python callables and `cello-dataplane` implements
//! as a reverse proxy.
//!
//! Modules: [`builder`] (`Server::builder`: assembly and lifecycle), [`stack`] (the
//! request path as a tower layer stack), [`target`] (what routes lead to), [`ext`]
//! (request extensions), [`router`] (route table), [`service`] (shared state),
//! [`serve`] (listener, connections, shutdown), [`body`] (request/response bodies),
//! [`files`] (file and range responses), [`statics`] (static directory mounts), [`problem`] (RFC 7807 responses),
//! [`metrics`] (Prometheus), [`telemetry`] (OpenTelemetry traces), [`health`] (probes).

pub mod auth;
pub mod body;
pub mod breaker;
pub mod builder;
pub mod cache;
pub mod csrf;
pub mod endpoint;
pub mod error;
pub mod ext;
pub mod files;
pub mod forwarded;
pub mod grpc;
pub mod health;
pub mod http3;
pub mod keys;
pub mod metrics;
pub mod middleware;
pub mod problem;
pub mod proxy;
pub mod ratelimit;
mod ratelimit_redis;
pub mod router;
pub mod serve;
pub mod service;
pub mod session;
pub mod spool;
pub mod stack;
pub mod statics;
pub mod target;
pub mod telemetry;
pub mod tls;
pub mod websocket;

pub use body::{RequestBody, RequestStream, ResponseBody};
pub use builder::{App, ServeOptions, Server, ServerBuilder, ShutdownHandle};
pub use endpoint::{Endpoint, RoutedRequest};
pub use error::{Error, Result};
pub use router::{Router, RouterBuilder};
pub use serve::Listener;
pub use service::AppState;
pub use target::{RouteOptions, Target};
