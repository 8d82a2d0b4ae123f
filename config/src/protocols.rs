//! Protocols beside HTTP/1.1 and HTTP/2: HTTP/3 (a server section), GraphQL and gRPC (app level).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::check_fields;
use crate::error::Result;

/// HTTP/3 over QUIC (`app.enable_http3(Http3Config)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Http3Config {
    /// Seconds a connection may be idle before it is closed.
    #[serde(alias = "max_idle_timeout")]
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub max_idle_timeout: f64,
    /// Largest UDP payload in bytes.
    #[serde(alias = "max_udp_payload_size")]
    #[schemars(range(min = 1200, max = 65527))]
    pub max_udp_payload_size: u32,
    /// Bidirectional streams a peer may open.
    #[serde(alias = "initial_max_streams_bidi")]
    pub initial_max_streams_bidi: u64,
    /// Accept 0-RTT data (replayable: only for idempotent requests).
    #[serde(alias = "enable_0rtt")]
    pub enable_0rtt: bool,
}

impl Default for Http3Config {
    fn default() -> Self {
        Self {
            max_idle_timeout: 30.0,
            max_udp_payload_size: 1350,
            initial_max_streams_bidi: 100,
            enable_0rtt: false,
        }
    }
}

impl Http3Config {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}

/// GraphQL endpoint (`GraphQLConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GraphQLConfig {
    /// URL path of the endpoint.
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
    /// Serve the GraphiQL playground on GET.
    pub playground: bool,
    /// Answer introspection queries.
    pub introspection: bool,
    /// Deepest query accepted.
    #[schemars(range(min = 1))]
    pub max_depth: Option<u32>,
    /// Most complex query accepted.
    #[schemars(range(min = 1))]
    pub max_complexity: Option<u32>,
    /// Accept a list of operations in one request.
    pub batching: bool,
    /// Add resolver timings to responses.
    pub tracing: bool,
}

impl Default for GraphQLConfig {
    fn default() -> Self {
        Self {
            path: "/graphql".into(),
            playground: true,
            introspection: true,
            max_depth: None,
            max_complexity: None,
            batching: false,
            tracing: false,
        }
    }
}

impl GraphQLConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}

/// gRPC server (`GrpcConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on.
    #[schemars(length(min = 1))]
    pub address: String,
    /// Serve the reflection service.
    pub reflection: bool,
    /// Largest message in bytes.
    #[schemars(range(min = 1))]
    pub max_message_size: u64,
    /// Accept gRPC-Web.
    pub enable_web: bool,
    /// HTTP/2 keep-alive ping interval in seconds.
    #[schemars(range(min = 0))]
    pub keepalive_secs: f64,
    /// Concurrent calls at most.
    #[schemars(range(min = 1))]
    pub concurrency_limit: u32,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            address: "[::]:50051".into(),
            reflection: true,
            max_message_size: 4_194_304,
            enable_web: false,
            keepalive_secs: 60.0,
            concurrency_limit: 100,
        }
    }
}

impl GrpcConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}
