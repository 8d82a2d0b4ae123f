//! Data layer connections (app level: `app.enable_database`, `app.enable_redis`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::check_fields;
use crate::error::Result;

/// SQL database pool (`DatabaseConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgresql://`, `mysql://` or `sqlite://` URL.
    #[schemars(length(min = 1), extend("format" = "uri"))]
    pub url: String,
    /// Connections at most.
    #[schemars(range(min = 1))]
    pub pool_size: u32,
    /// Idle connections kept open.
    pub min_idle: u32,
    /// Seconds a connection lives before it is replaced.
    #[schemars(range(min = 0))]
    pub max_lifetime_secs: f64,
    /// Seconds to wait for a connection.
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub connection_timeout_secs: f64,
    /// Seconds an idle connection is kept.
    #[schemars(range(min = 0))]
    pub idle_timeout_secs: f64,
    /// `application_name` reported to the server.
    pub application_name: Option<String>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 10,
            min_idle: 1,
            max_lifetime_secs: 1800.0,
            connection_timeout_secs: 5.0,
            idle_timeout_secs: 300.0,
            application_name: None,
        }
    }
}

impl DatabaseConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}

/// Redis pool (`RedisConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL.
    #[schemars(length(min = 1), extend("format" = "uri"))]
    pub url: String,
    /// Connections at most.
    #[schemars(range(min = 1))]
    pub pool_size: u32,
    /// Idle connections kept open.
    pub min_idle: u32,
    /// Seconds to wait for a connection.
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub connection_timeout_secs: f64,
    /// Seconds an idle connection is kept.
    #[schemars(range(min = 0))]
    pub idle_timeout_secs: f64,
    /// Redis Cluster.
    pub cluster_mode: bool,
    /// Default TTL of cached values in seconds.
    #[schemars(range(min = 1))]
    pub default_ttl: Option<u64>,
    /// Database number.
    pub database: u32,
    /// Password (else the one in the URL).
    #[schemars(extend("format" = "password"))]
    pub password: Option<String>,
    /// TLS to the server.
    pub tls: bool,
    /// Prefix of every key.
    pub key_prefix: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            pool_size: 10,
            min_idle: 1,
            connection_timeout_secs: 5.0,
            idle_timeout_secs: 300.0,
            cluster_mode: false,
            default_ttl: None,
            database: 0,
            password: None,
            tls: false,
            key_prefix: None,
        }
    }
}

impl RedisConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}
