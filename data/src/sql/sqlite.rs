//! SQLite: parameters and columns. Values are typed by their storage class, refined by
//! the column's declared type (BOOLEAN, DATE, TIME, DATETIME/TIMESTAMP, NUMERIC/DECIMAL,
//! UUID, JSON). Decimal, UUID and JSON parameters are stored as text.

use std::str::FromStr;

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteColumn, SqliteRow};
use sqlx::{Column, Row, Sqlite, SqliteConnection, TypeInfo, ValueRef};

use super::{Op, Output};
use crate::error::Result;
use crate::value::{Rows, Value};
use uuid::Uuid;

type Q<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

fn bind(q: Q<'_>, v: Value) -> Q<'_> {
    match v {
        Value::Null => q.bind(None::<i64>),
        Value::Bool(b) => q.bind(b),
        Value::Int(i) => q.bind(i),
        Value::Float(f) => q.bind(f),
        Value::Text(s) => q.bind(s),
        Value::Bytes(b) => q.bind(b),
        Value::Decimal(d) => q.bind(d.to_string()),
        Value::Uuid(u) => q.bind(u.hyphenated().to_string()),
        Value::Json(j) => q.bind(j.to_string()),
        Value::Date(d) => q.bind(d.format("%Y-%m-%d").to_string()),
        Value::Time(t) => q.bind(t.format("%H:%M:%S%.f").to_string()),
        Value::DateTime(t) => q.bind(t.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
        Value::DateTimeTz(t) => q.bind(t.format("%Y-%m-%d %H:%M:%S%.f%:z").to_string()),
        a @ Value::Array(_) => q.bind(a.to_json().to_string()),
    }
}

pub(super) async fn run(c: &mut SqliteConnection, sql: &str, params: Vec<Value>, op: Op) -> Result<Output> {
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

/// What a column's declared type (as written in CREATE TABLE, from the patched sqlx-sqlite of
/// `vendor/`) says its values are. SQLite keeps no type with a value beyond its storage
/// class, so an expression (`SELECT json('{}')`, `CAST(x AS DECIMAL)`, `$1`) has no
/// declared type and comes back as stored: int, float, str or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Bool,
    Date,
    Time,
    DateTime,
    Decimal,
    Uuid,
    Json,
    Other,
}

fn declared(col: &SqliteColumn) -> Declared {
    let Some(decl) = col.decltype() else {
        return Declared::Other;
    };
    // The type name without its size: `DECIMAL(10,2)` is DECIMAL.
    let name = decl.split('(').next().unwrap_or("").trim().to_ascii_uppercase();
    match name.as_str() {
        "BOOLEAN" | "BOOL" => Declared::Bool,
        "DATE" => Declared::Date,
        "TIME" => Declared::Time,
        "DATETIME" | "TIMESTAMP" | "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" | "TIMESTAMP WITHOUT TIME ZONE" => {
            Declared::DateTime
        }
        "NUMERIC" | "DECIMAL" => Declared::Decimal,
        "UUID" => Declared::Uuid,
        "JSON" | "JSONB" => Declared::Json,
        _ => Declared::Other,
    }
}

fn decode_rows(rows: Vec<SqliteRow>) -> Result<Output> {
    let Some(first) = rows.first() else {
        return Ok(Output::Rows(Rows::default()));
    };
    let columns: std::sync::Arc<[String]> = first.columns().iter().map(|c| c.name().to_owned()).collect();
    let declared: Vec<Declared> = first.columns().iter().map(declared).collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, decl) in declared.iter().enumerate() {
            values.push(decode(row, i, *decl)?);
        }
        out.push(values);
    }
    Ok(Output::Rows(Rows { columns, rows: out }))
}

fn decode(row: &SqliteRow, i: usize, declared: Declared) -> Result<Value> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let storage = raw.type_info().name().to_owned();
    macro_rules! get {
        ($t:ty) => {
            row.try_get_unchecked::<$t, _>(i)?
        };
    }
    Ok(match (storage.as_str(), declared) {
        ("INTEGER", Declared::Bool) => Value::Bool(get!(i64) != 0),
        // NUMERIC affinity stores a well-formed number as INTEGER or REAL (15 significant
        // digits); other text stays TEXT.
        ("INTEGER", Declared::Decimal) => Value::Decimal(BigDecimal::from(get!(i64))),
        ("REAL", Declared::Decimal) => {
            let f = get!(f64);
            // The shortest text that reads back as the same double: 1.1, not 1.100000000000000088.
            BigDecimal::from_str(&f.to_string()).map_or(Value::Float(f), Value::Decimal)
        }
        ("TEXT", Declared::Decimal) => {
            let s = get!(String);
            BigDecimal::from_str(s.trim()).map_or(Value::Text(s), Value::Decimal)
        }
        ("INTEGER", _) => Value::Int(get!(i64)),
        ("REAL", _) => Value::Float(get!(f64)),
        ("BLOB", Declared::Uuid) => {
            let b = get!(Vec<u8>);
            Uuid::from_slice(&b).map_or(Value::Bytes(b), Value::Uuid)
        }
        ("BLOB", _) => Value::Bytes(get!(Vec<u8>)),
        ("TEXT", Declared::Uuid) => {
            let s = get!(String);
            Uuid::parse_str(&s).map_or(Value::Text(s), Value::Uuid)
        }
        ("TEXT", Declared::Json) => {
            let s = get!(String);
            serde_json::from_str(&s).map_or(Value::Text(s), Value::Json)
        }
        ("TEXT", Declared::DateTime) => {
            let s = get!(String);
            parse_datetime(&s).unwrap_or(Value::Text(s))
        }
        ("TEXT", Declared::Date) => {
            let s = get!(String);
            NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_or(Value::Text(s), Value::Date)
        }
        ("TEXT", Declared::Time) => {
            let s = get!(String);
            NaiveTime::parse_from_str(&s, "%H:%M:%S%.f").map_or(Value::Text(s), Value::Time)
        }
        _ => Value::Text(get!(String)),
    })
}

fn parse_datetime(s: &str) -> Option<Value> {
    for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%:z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(Value::DateTimeTz(t));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(Value::DateTimeTz(t));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(Value::DateTime(t));
        }
    }
    None
}
