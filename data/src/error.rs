//! The one error type of the data layer; the Python side maps [`Kind`] to its exception classes.

/// What went wrong, as the Python hierarchy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    UniqueViolation,
    ForeignKeyViolation,
    NotNullViolation,
    CheckViolation,
    /// Another integrity constraint (SQLSTATE class 23).
    Integrity,
    /// Connection lost, server unreachable, TLS, protocol.
    Operational,
    /// No connection within `connection_timeout_secs`.
    PoolTimeout,
    /// The transaction failed earlier and must be rolled back (SQLSTATE 25P02).
    TransactionAborted,
    /// Any other error the database reported (syntax, unknown table, ...).
    Database,
}

/// A data-layer error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reported by the database or the pool.
    #[error("{message}")]
    Db {
        kind: Kind,
        sqlstate: Option<String>,
        constraint: Option<String>,
        message: String,
    },
    /// A parameter the statement cannot take (count or type), found before sending.
    #[error("{0}")]
    Param(String),
    /// A bad URL or option.
    #[error("{0}")]
    Config(String),
    /// Used after `close()` or after the transaction ended.
    #[error("{0}")]
    State(String),
    /// Asked for something not built (Redis Sentinel).
    #[error("{0}")]
    Unsupported(String),
    /// A Redis error.
    #[error("{message}")]
    Redis { message: String, unavailable: bool },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn db(kind: Kind, message: impl Into<String>) -> Self {
        Error::Db {
            kind,
            sqlstate: None,
            constraint: None,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match e {
            E::Database(db) => {
                let sqlstate = db.code().map(|c| c.into_owned());
                let kind = match db.kind() {
                    sqlx::error::ErrorKind::UniqueViolation => Kind::UniqueViolation,
                    sqlx::error::ErrorKind::ForeignKeyViolation => Kind::ForeignKeyViolation,
                    sqlx::error::ErrorKind::NotNullViolation => Kind::NotNullViolation,
                    sqlx::error::ErrorKind::CheckViolation => Kind::CheckViolation,
                    _ => classify_code(sqlstate.as_deref(), db.message()),
                };
                Error::Db {
                    kind,
                    sqlstate,
                    constraint: db.constraint().map(str::to_owned),
                    message: db.message().to_owned(),
                }
            }
            E::PoolTimedOut => Error::db(
                Kind::PoolTimeout,
                "no database connection became free within connection_timeout_secs",
            ),
            E::PoolClosed => Error::State("the database pool is closed".into()),
            E::Io(_) | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed | E::BeginFailed => {
                Error::db(Kind::Operational, e.to_string())
            }
            E::Configuration(_) => Error::Config(e.to_string()),
            E::ColumnDecode { .. } | E::Decode(_) | E::TypeNotFound { .. } | E::Encode(_) => {
                Error::db(Kind::Database, e.to_string())
            }
            other => Error::db(Kind::Database, other.to_string()),
        }
    }
}

/// SQLSTATE classes (and MySQL numbers, which arrive as SQLSTATE `HY000`/`23000`).
fn classify_code(code: Option<&str>, message: &str) -> Kind {
    let Some(code) = code else {
        return Kind::Database;
    };
    match code {
        "25P02" => Kind::TransactionAborted,
        c if c.starts_with("23") => {
            // MySQL reports every constraint as 23000; the message tells which.
            let m = message.to_ascii_lowercase();
            if m.contains("duplicate") {
                Kind::UniqueViolation
            } else if m.contains("foreign key") {
                Kind::ForeignKeyViolation
            } else if m.contains("cannot be null") {
                Kind::NotNullViolation
            } else if m.contains("check constraint") || (m.starts_with("constraint") && m.contains("failed")) {
                Kind::CheckViolation
            } else {
                Kind::Integrity
            }
        }
        // Connection exceptions, operator intervention (terminated backends), resources.
        c if c.starts_with("08") || c.starts_with("57") || c.starts_with("53") => Kind::Operational,
        _ => Kind::Database,
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        let unavailable = e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout();
        Error::Redis {
            message: e.to_string(),
            unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes() {
        assert_eq!(classify_code(Some("25P02"), ""), Kind::TransactionAborted);
        assert_eq!(classify_code(Some("08006"), ""), Kind::Operational);
        assert_eq!(
            classify_code(Some("57P01"), "terminating connection"),
            Kind::Operational
        );
        assert_eq!(classify_code(Some("42601"), "syntax"), Kind::Database);
        assert_eq!(classify_code(None, "x"), Kind::Database);
        // MySQL/MariaDB: 23000 for every constraint, told apart by the message.
        assert_eq!(
            classify_code(Some("23000"), "Duplicate entry 'a' for key 'name'"),
            Kind::UniqueViolation
        );
        assert_eq!(
            classify_code(
                Some("23000"),
                "Cannot add or update a child row: a foreign key constraint fails"
            ),
            Kind::ForeignKeyViolation
        );
        assert_eq!(
            classify_code(Some("23000"), "Column 'name' cannot be null"),
            Kind::NotNullViolation
        );
        assert_eq!(
            classify_code(Some("23000"), "CONSTRAINT `t.qty` failed for `test`.`t`"),
            Kind::CheckViolation
        );
        assert_eq!(classify_code(Some("23000"), "something else"), Kind::Integrity);
    }
}
