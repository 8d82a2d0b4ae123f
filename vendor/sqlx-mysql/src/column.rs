use crate::ext::ustr::UStr;
use crate::protocol::text::ColumnFlags;
use crate::{MySql, MySqlTypeInfo};
pub(crate) use sqlx_core::column::*;

#[derive(Debug, Clone)]
#[cfg_attr(feature = "offline", derive(serde::Serialize, serde::Deserialize))]
pub struct MySqlColumn {
    pub(crate) ordinal: usize,
    pub(crate) name: UStr,
    pub(crate) type_info: MySqlTypeInfo,

    #[cfg_attr(feature = "offline", serde(skip))]
    pub(crate) flags: Option<ColumnFlags>,

    // [cello patch] what the type name cannot tell: the character set of the value
    // (binary or not; a text column with a `_bin` collation has the BINARY flag too) and
    // MariaDB's extended type information (a `JSON` column is `LONGTEXT` + format `json`).
    #[cfg_attr(feature = "offline", serde(skip))]
    pub(crate) collation: u16,
    #[cfg_attr(feature = "offline", serde(skip))]
    pub(crate) ext_type: Option<String>,
    #[cfg_attr(feature = "offline", serde(skip))]
    pub(crate) ext_format: Option<String>,
}

/// The `binary` character set: a BLOB/BINARY value, not text.
const BINARY_COLLATION: u16 = 63;

impl MySqlColumn {
    /// [cello patch] The value is bytes (the `binary` character set), not text.
    pub fn is_binary_charset(&self) -> bool {
        self.collation == BINARY_COLLATION
    }

    /// [cello patch] MariaDB's extended data type name (`uuid`, `inet6`, ...), when the
    /// server sent it.
    pub fn mariadb_type(&self) -> Option<&str> {
        self.ext_type.as_deref()
    }

    /// [cello patch] MariaDB's extended format (`json` for JSON columns and JSON functions),
    /// when the server sent it.
    pub fn mariadb_format(&self) -> Option<&str> {
        self.ext_format.as_deref()
    }
}

impl Column for MySqlColumn {
    type Database = MySql;

    fn ordinal(&self) -> usize {
        self.ordinal
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn type_info(&self) -> &MySqlTypeInfo {
        &self.type_info
    }
}
