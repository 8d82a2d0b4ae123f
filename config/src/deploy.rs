//! Process supervision (`ClusterConfig`, read by `app.run()` and `cello run`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::check_fields;
use crate::error::Result;

/// Worker processes and how they are supervised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Worker processes (unset: one).
    #[schemars(range(min = 1))]
    pub workers: Option<u32>,
    /// Pin each worker to one CPU.
    pub cpu_affinity: bool,
    /// Restarts of crashed workers allowed before the supervisor gives up.
    pub max_restarts: u32,
    /// On SIGTERM, let workers finish their requests.
    pub graceful_shutdown: bool,
    /// Seconds a graceful shutdown may take.
    #[schemars(range(min = 0))]
    pub shutdown_timeout: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            workers: None,
            cpu_affinity: false,
            max_restarts: 5,
            graceful_shutdown: true,
            shutdown_timeout: 30.0,
        }
    }
}

impl ClusterConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)
    }
}
