//! MySQL and MariaDB: parameters and columns. No arrays: a list parameter is sent as JSON text.
//!
//! Column kinds use what the patched sqlx-mysql of `vendor/` exposes (the character set and
//! MariaDB's extended type information); see [`Kind`].

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sqlx::mysql::{MySqlArguments, MySqlColumn, MySqlRow};
use sqlx::query::Query;
use sqlx::{Column, MySql, MySqlConnection, Row, TypeInfo, ValueRef};

use super::{Op, Output};
use crate::error::Result;
use crate::value::{Rows, Value};
use uuid::Uuid;

type Q<'q> = Query<'q, MySql, MySqlArguments>;

fn bind(q: Q<'_>, v: Value) -> Q<'_> {
    match v {
        Value::Null => q.bind(None::<String>),
        Value::Bool(b) => q.bind(b),
        Value::Int(i) => q.bind(i),
        Value::Float(f) => q.bind(f),
        Value::Text(s) => q.bind(s),
        Value::Bytes(b) => q.bind(b),
        Value::Decimal(d) => q.bind(d),
        Value::Uuid(u) => q.bind(u.hyphenated().to_string()),
        Value::Json(j) => q.bind(j.to_string()),
        Value::Date(d) => q.bind(d),
        Value::Time(t) => q.bind(t),
        Value::DateTime(t) => q.bind(t),
        // MySQL keeps no offset: store the instant in UTC (the session runs in +00:00).
        Value::DateTimeTz(t) => q.bind(t.with_timezone(&Utc)),
        a @ Value::Array(_) => q.bind(a.to_json().to_string()),
    }
}

pub(super) async fn run(c: &mut MySqlConnection, sql: &str, params: Vec<Value>, op: Op) -> Result<Output> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = bind(q, p);
    }
    match op {
        Op::Execute => Ok(Output::Affected(q.execute(c).await?.rows_affected())),
        Op::All => decode_rows(q.fetch_all(c).await?),
        Op::One => decode_rows(q.fetch_optional(c).await?.into_iter().collect()),
    }
}

/// How a column's values are read: sqlx's type name is not enough on MariaDB, where a JSON
/// column is `LONGTEXT` (told apart only by the extended format `json`), a UUID column is
/// `CHAR(36)` (extended type `uuid`), and text with a `_bin` collation carries the BINARY flag
/// like a BLOB (told apart by its character set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Uuid,
    /// BLOB/BINARY-typed, but text (not the `binary` character set).
    Text,
    /// By sqlx's type name.
    Named,
}

fn kind(col: &MySqlColumn) -> Kind {
    if col.mariadb_format() == Some("json") || col.type_info().name() == "JSON" {
        return Kind::Json;
    }
    if col.mariadb_type() == Some("uuid") {
        return Kind::Uuid;
    }
    match col.type_info().name() {
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" if !col.is_binary_charset() => {
            Kind::Text
        }
        _ => Kind::Named,
    }
}

fn decode_rows(rows: Vec<MySqlRow>) -> Result<Output> {
    let Some(first) = rows.first() else {
        return Ok(Output::Rows(Rows::default()));
    };
    let columns: std::sync::Arc<[String]> = first.columns().iter().map(|c| c.name().to_owned()).collect();
    let kinds: Vec<Kind> = first.columns().iter().map(kind).collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, k) in kinds.iter().enumerate() {
            values.push(decode(row, i, *k)?);
        }
        out.push(values);
    }
    Ok(Output::Rows(Rows { columns, rows: out }))
}

fn decode(row: &MySqlRow, i: usize, kind: Kind) -> Result<Value> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let ty = raw.type_info().name().to_owned();
    macro_rules! get {
        ($t:ty) => {
            row.try_get_unchecked::<$t, _>(i)?
        };
    }
    match kind {
        Kind::Json => {
            let s = get!(String);
            return Ok(serde_json::from_str(&s).map_or(Value::Text(s), Value::Json));
        }
        Kind::Uuid => {
            let s = get!(String);
            return Ok(Uuid::parse_str(&s).map_or(Value::Text(s), Value::Uuid));
        }
        Kind::Text => return Ok(Value::Text(get!(String))),
        Kind::Named => {}
    }
    Ok(match ty.as_str() {
        "BOOLEAN" => Value::Bool(get!(bool)),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => Value::Int(get!(i64)),
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED" | "BIGINT UNSIGNED"
        | "BIT" => {
            let u = get!(u64);
            i64::try_from(u).map_or_else(|_| Value::Decimal(BigDecimal::from(u)), Value::Int)
        }
        "FLOAT" => Value::Float(get!(f32).into()),
        "DOUBLE" => Value::Float(get!(f64)),
        "DECIMAL" => Value::Decimal(get!(BigDecimal)),
        "DATE" => Value::Date(get!(NaiveDate)),
        "TIME" => Value::Time(get!(NaiveTime)),
        "DATETIME" => Value::DateTime(get!(NaiveDateTime)),
        "TIMESTAMP" => Value::DateTimeTz(get!(DateTime<Utc>).fixed_offset()),
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" | "GEOMETRY" => {
            Value::Bytes(get!(Vec<u8>))
        }
        _ => match row.try_get_unchecked::<String, _>(i) {
            Ok(s) => Value::Text(s),
            Err(_) => Value::Bytes(get!(Vec<u8>)),
        },
    })
}
