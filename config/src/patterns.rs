//! Application patterns: event sourcing, CQRS, sagas (app level).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::check_fields;
use crate::error::Result;

/// Event store (`EventSourcingConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EventSourcingConfig {
    /// `memory`, `sqlite` or `postgresql`.
    #[schemars(extend("enum" = ["memory", "sqlite", "postgresql"]))]
    pub store_type: String,
    /// Events between snapshots.
    #[schemars(range(min = 1))]
    pub snapshot_interval: u32,
    /// Take snapshots.
    pub enable_snapshots: bool,
    /// Events per aggregate at most.
    #[schemars(range(min = 1))]
    pub max_events_per_aggregate: u64,
    /// Seconds events are kept (0: forever).
    pub event_ttl_secs: u64,
    /// Store URL (sqlite, postgresql).
    #[schemars(extend("format" = "uri"))]
    pub connection_url: Option<String>,
}

impl Default for EventSourcingConfig {
    fn default() -> Self {
        Self {
            store_type: "memory".into(),
            snapshot_interval: 100,
            enable_snapshots: true,
            max_events_per_aggregate: 10_000,
            event_ttl_secs: 0,
            connection_url: None,
        }
    }
}

impl EventSourcingConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}

/// Command/query buses (`CqrsConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CqrsConfig {
    /// Project events into read models as they happen.
    pub enable_event_sync: bool,
    /// Milliseconds a command may take.
    #[schemars(range(min = 1))]
    pub command_timeout_ms: u64,
    /// Milliseconds a query may take.
    #[schemars(range(min = 1))]
    pub query_timeout_ms: u64,
    /// Retries of a failed command.
    pub max_retries: u32,
}

impl Default for CqrsConfig {
    fn default() -> Self {
        Self {
            enable_event_sync: true,
            command_timeout_ms: 5000,
            query_timeout_ms: 3000,
            max_retries: 3,
        }
    }
}

impl CqrsConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}

/// Saga orchestration (`SagaConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SagaConfig {
    /// Retries of a failed step.
    pub max_retries: u32,
    /// Milliseconds between retries.
    pub retry_delay_ms: u64,
    /// Milliseconds a saga may take.
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
    /// Log each step.
    pub enable_logging: bool,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            retry_delay_ms: 1000,
            timeout_ms: 30_000,
            enable_logging: true,
        }
    }
}

impl SagaConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}
