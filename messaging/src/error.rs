//! The one error type of the messaging crate.

/// A messaging error; the Python side maps [`Error::Unavailable`] to `BrokerUnavailable`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker cannot be reached (connect refused, timed out, connection lost).
    #[error("{0}")]
    Unavailable(String),
    /// The broker refused a command.
    #[error("{0}")]
    Broker(String),
    /// A bad URL or option.
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
            Error::Unavailable(format!("Redis: {e}"))
        } else {
            Error::Broker(format!("Redis: {e}"))
        }
    }
}
