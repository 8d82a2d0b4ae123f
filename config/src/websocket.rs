//! WebSocket settings (`WebSocketConfig` in Python, `websocket:` in `cello.yaml`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};

/// WebSocket keep-alive, limits and buffering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Seconds between server pings on a quiet connection (0: no pings).
    #[serde(alias = "ping_interval")]
    #[schemars(range(min = 0.0))]
    pub ping_interval: f64,
    /// Seconds without any frame from the peer (pongs count) before the server closes with
    /// 1001 (0: never).
    #[serde(alias = "idle_timeout")]
    #[schemars(range(min = 0.0))]
    pub idle_timeout: f64,
    /// Largest message (and frame) in bytes; a bigger one closes the connection with 1009.
    #[serde(alias = "max_message_size")]
    #[schemars(range(min = 125))]
    pub max_message_size: u64,
    /// Messages buffered in each direction between the socket and the handler; when full,
    /// the server stops reading (incoming) or `send()` waits (outgoing).
    #[serde(alias = "queue_size")]
    #[schemars(range(min = 1, max = 65_536))]
    pub queue_size: u32,
    /// permessage-deflate (RFC 7692): take up a client's compression offer (context takeover,
    /// `server_no_context_takeover`, `client_no_context_takeover`, `server_max_window_bits`
    /// 9 to 15). Clients that do not offer it get an uncompressed connection.
    #[serde(alias = "per_message_deflate")]
    pub per_message_deflate: bool,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            ping_interval: 20.0,
            idle_timeout: 60.0,
            max_message_size: 1_048_576,
            queue_size: 16,
            per_message_deflate: false,
        }
    }
}

impl WebSocketConfig {
    /// Range checks.
    pub fn validate(&self) -> Result<()> {
        if !(self.ping_interval.is_finite() && self.ping_interval >= 0.0) {
            return Err(invalid("websocket.pingInterval", "must be a number of seconds >= 0"));
        }
        if !(self.idle_timeout.is_finite() && self.idle_timeout >= 0.0) {
            return Err(invalid("websocket.idleTimeout", "must be a number of seconds >= 0"));
        }
        if self.max_message_size < 125 {
            return Err(invalid("websocket.maxMessageSize", "must be at least 125 bytes"));
        }
        if !(1..=65_536).contains(&self.queue_size) {
            return Err(invalid("websocket.queueSize", "must be between 1 and 65536"));
        }
        Ok(())
    }
}
