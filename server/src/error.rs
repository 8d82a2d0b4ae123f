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
    /// Configuration was rejected.
    #[error(transparent)]
    Config(#[from] cello_config::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
