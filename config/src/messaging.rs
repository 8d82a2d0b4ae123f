//! Message brokers (app level: producers and queue consumers).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::check_fields;
use crate::error::Result;

/// Kafka client (`KafkaConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port`).
    pub brokers: Vec<String>,
    /// Consumer group.
    pub group_id: Option<String>,
    /// Client id reported to the brokers.
    pub client_id: Option<String>,
    /// Commit offsets automatically.
    pub auto_commit: bool,
    /// Consumer session timeout in milliseconds.
    #[schemars(range(min = 1))]
    pub session_timeout_ms: u64,
    /// Records per poll at most.
    #[schemars(range(min = 1))]
    pub max_poll_records: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            group_id: None,
            client_id: None,
            auto_commit: true,
            session_timeout_ms: 30_000,
            max_poll_records: 500,
        }
    }
}

impl KafkaConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}

/// RabbitMQ client (`RabbitMQConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitMQConfig {
    /// `amqp://` URL.
    #[schemars(length(min = 1), extend("format" = "uri"))]
    pub url: String,
    /// Virtual host.
    pub vhost: String,
    /// Unacknowledged messages per consumer.
    #[schemars(range(max = 65535))]
    pub prefetch_count: u32,
    /// Heartbeat interval in seconds (0: off).
    pub heartbeat: u32,
    /// Seconds to wait for a connection.
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub connection_timeout_secs: f64,
}

impl Default for RabbitMQConfig {
    fn default() -> Self {
        Self {
            url: "amqp://localhost".into(),
            vhost: "/".into(),
            prefetch_count: 10,
            heartbeat: 60,
            connection_timeout_secs: 5.0,
        }
    }
}

impl RabbitMQConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}

/// Amazon SQS client (`SqsConfig`); the ranges are SQS's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SqsConfig {
    /// AWS region.
    #[schemars(length(min = 1))]
    pub region: String,
    /// Queue URL.
    pub queue_url: String,
    /// Endpoint override (LocalStack).
    pub endpoint_url: Option<String>,
    /// Messages per receive (SQS allows at most 10).
    #[schemars(range(min = 1, max = 10))]
    pub max_messages: u32,
    /// Long-polling wait in seconds (at most 20).
    #[schemars(range(max = 20))]
    pub wait_time_secs: u32,
    /// Visibility timeout in seconds (at most 12 h).
    #[schemars(range(max = 43200))]
    pub visibility_timeout_secs: u32,
}

impl Default for SqsConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            queue_url: String::new(),
            endpoint_url: None,
            max_messages: 10,
            wait_time_secs: 20,
            visibility_timeout_secs: 30,
        }
    }
}

impl SqsConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}
