/// Errors of the data plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A route template could not be parsed or conflicts with another.
    #[error("invalid route `{path}`: {reason}")]
    Route { path: String, reason: String },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// TLS certificate, key or CA files could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// Configuration was rejected.
    #[error(transparent)]
    Config(#[from] cello_config::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
