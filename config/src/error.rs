/// Errors raised while reading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field has a value outside its allowed range; `field` is the dotted path.
    #[error("invalid value for `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    /// The document could not be parsed (JSON or YAML).
    #[error("could not parse configuration: {0}")]
    Parse(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}
