use crate::ext::ustr::UStr;
use crate::{Sqlite, SqliteTypeInfo};

pub(crate) use sqlx_core::column::*;

#[derive(Debug, Clone)]
#[cfg_attr(feature = "offline", derive(serde::Serialize, serde::Deserialize))]
pub struct SqliteColumn {
    pub(crate) name: UStr,
    pub(crate) ordinal: usize,
    pub(crate) type_info: SqliteTypeInfo,
    // [cello patch] The declared type as written in CREATE TABLE (`DECIMAL(10,2)`, `UUID`,
    // `JSON`, ...): `type_info` keeps only what sqlx decodes itself. None for expressions.
    #[cfg_attr(feature = "offline", serde(skip))]
    pub(crate) decltype: Option<Box<str>>,
}

impl SqliteColumn {
    /// [cello patch] The column's declared type (`sqlite3_column_decltype`), as written;
    /// None for an expression or a subquery.
    pub fn decltype(&self) -> Option<&str> {
        self.decltype.as_deref()
    }
}

impl Column for SqliteColumn {
    type Database = Sqlite;

    fn ordinal(&self) -> usize {
        self.ordinal
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn type_info(&self) -> &SqliteTypeInfo {
        &self.type_info
    }
}
