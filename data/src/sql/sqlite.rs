//! SQLite: parameters and columns. Values are typed by their storage class, refined by
//! the column's declared type (BOOLEAN, DATE, TIME, DATETIME). Decimal, UUID and JSON
//! parameters are stored as text.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Column, Row, Sqlite, SqliteConnection, TypeInfo, ValueRef};

use super::{Op, Output};
use crate::error::Result;
use crate::value::{Rows, Value};

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

fn decode_rows(rows: Vec<SqliteRow>) -> Result<Output> {
    let Some(first) = rows.first() else {
        return Ok(Output::Rows(Rows::default()));
    };
    let columns: std::sync::Arc<[String]> = first.columns().iter().map(|c| c.name().to_owned()).collect();
    let declared: Vec<String> = first
        .columns()
        .iter()
        .map(|c| c.type_info().name().to_owned())
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, decl) in declared.iter().enumerate() {
            values.push(decode(row, i, decl)?);
        }
        out.push(values);
    }
    Ok(Output::Rows(Rows { columns, rows: out }))
}

fn decode(row: &SqliteRow, i: usize, declared: &str) -> Result<Value> {
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
        ("INTEGER", "BOOLEAN") => Value::Bool(get!(i64) != 0),
        ("INTEGER", _) => Value::Int(get!(i64)),
        ("REAL", _) => Value::Float(get!(f64)),
        ("BLOB", _) => Value::Bytes(get!(Vec<u8>)),
        ("TEXT", "DATETIME") => {
            let s = get!(String);
            parse_datetime(&s).unwrap_or(Value::Text(s))
        }
        ("TEXT", "DATE") => {
            let s = get!(String);
            NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_or(Value::Text(s), Value::Date)
        }
        ("TEXT", "TIME") => {
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
