//! PostgreSQL: parameters and columns.

use bigdecimal::BigDecimal;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sqlx::postgres::{PgArguments, PgRow, PgTypeInfo};
use sqlx::query::Query;
use sqlx::{Column, PgConnection, Postgres, Row, TypeInfo, ValueRef};
use uuid::Uuid;

use super::{Op, Output};
use crate::error::{Error, Result};
use crate::value::{Rows, Value};

type Q<'q> = Query<'q, Postgres, PgArguments>;

/// A NULL whose type the server infers from the statement (OID 0), as psql does: binding
/// it as TEXT would fail for an integer or JSON column.
struct Untyped;

impl sqlx::Type<Postgres> for Untyped {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for Untyped {
    fn encode_by_ref(
        &self,
        _: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

fn bind(q: Q<'_>, v: Value) -> Result<Q<'_>> {
    Ok(match v {
        Value::Null => q.bind(Untyped),
        Value::Bool(b) => q.bind(b),
        Value::Int(i) => q.bind(i),
        Value::Float(f) => q.bind(f),
        Value::Text(s) => q.bind(s),
        Value::Bytes(b) => q.bind(b),
        Value::Decimal(d) => q.bind(d),
        Value::Uuid(u) => q.bind(u),
        Value::Json(j) => q.bind(sqlx::types::Json(j)),
        Value::Date(d) => q.bind(d),
        Value::Time(t) => q.bind(t),
        Value::DateTime(t) => q.bind(t),
        Value::DateTimeTz(t) => q.bind(t),
        Value::Array(items) => bind_array(q, items)?,
    })
}

/// A one-dimensional array of one element type (NULLs allowed); an empty list is `text[]`.
fn bind_array(q: Q<'_>, items: Vec<Value>) -> Result<Q<'_>> {
    let kind = items.iter().find(|v| !matches!(v, Value::Null)).map(Value::kind);
    macro_rules! arr {
        ($variant:ident, $t:ty) => {{
            let mut out: Vec<Option<$t>> = Vec::with_capacity(items.len());
            for v in items {
                match v {
                    Value::Null => out.push(None),
                    Value::$variant(x) => out.push(Some(x)),
                    other => {
                        return Err(Error::Param(format!(
                            "a PostgreSQL array needs elements of one type, got {} among {}",
                            other.kind(),
                            kind.unwrap_or("?")
                        )))
                    }
                }
            }
            q.bind(out)
        }};
    }
    Ok(match items.iter().find(|v| !matches!(v, Value::Null)) {
        None => q.bind(Vec::<Option<String>>::new()),
        Some(Value::Bool(_)) => arr!(Bool, bool),
        Some(Value::Int(_)) => arr!(Int, i64),
        Some(Value::Float(_)) => arr!(Float, f64),
        Some(Value::Text(_)) => arr!(Text, String),
        Some(Value::Bytes(_)) => arr!(Bytes, Vec<u8>),
        Some(Value::Decimal(_)) => arr!(Decimal, BigDecimal),
        Some(Value::Uuid(_)) => arr!(Uuid, Uuid),
        Some(Value::Date(_)) => arr!(Date, NaiveDate),
        Some(Value::Time(_)) => arr!(Time, NaiveTime),
        Some(Value::DateTime(_)) => arr!(DateTime, NaiveDateTime),
        Some(Value::DateTimeTz(_)) => arr!(DateTimeTz, DateTime<FixedOffset>),
        // Lists of objects or lists: JSON.
        Some(_) => q.bind(sqlx::types::Json(Value::Array(items).to_json())),
    })
}

pub(super) async fn run(c: &mut PgConnection, sql: &str, params: Vec<Value>, op: Op) -> Result<Output> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = bind(q, p)?;
    }
    match op {
        Op::Execute => Ok(Output::Affected(q.execute(c).await?.rows_affected())),
        Op::All => decode_rows(q.fetch_all(c).await?),
        Op::One => decode_rows(q.fetch_optional(c).await?.into_iter().collect()),
    }
}

fn decode_rows(rows: Vec<PgRow>) -> Result<Output> {
    let Some(first) = rows.first() else {
        return Ok(Output::Rows(Rows::default()));
    };
    let columns: std::sync::Arc<[String]> = first.columns().iter().map(|c| c.name().to_owned()).collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            values.push(decode(row, i)?);
        }
        out.push(values);
    }
    Ok(Output::Rows(Rows { columns, rows: out }))
}

fn decode(row: &PgRow, i: usize) -> Result<Value> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let ty = raw.type_info().name().to_owned();
    macro_rules! get {
        ($t:ty) => {
            row.try_get::<$t, _>(i)?
        };
    }
    macro_rules! list {
        ($t:ty, $f:expr) => {
            Value::Array(
                get!(Vec<Option<$t>>)
                    .into_iter()
                    .map(|x| x.map_or(Value::Null, $f))
                    .collect(),
            )
        };
    }
    Ok(match ty.as_str() {
        "BOOL" => Value::Bool(get!(bool)),
        "INT2" => Value::Int(get!(i16).into()),
        "INT4" => Value::Int(get!(i32).into()),
        "INT8" => Value::Int(get!(i64)),
        "OID" => Value::Int(get!(sqlx::postgres::types::Oid).0.into()),
        "FLOAT4" => Value::Float(get!(f32).into()),
        "FLOAT8" => Value::Float(get!(f64)),
        "NUMERIC" => Value::Decimal(get!(BigDecimal)),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" | "UNKNOWN" => Value::Text(get!(String)),
        "\"CHAR\"" => Value::Text(char::from(get!(i8) as u8).to_string()),
        "BYTEA" => Value::Bytes(get!(Vec<u8>)),
        "UUID" => Value::Uuid(get!(Uuid)),
        "JSON" | "JSONB" => Value::Json(get!(serde_json::Value)),
        "DATE" => Value::Date(get!(NaiveDate)),
        "TIME" => Value::Time(get!(NaiveTime)),
        "TIMESTAMP" => Value::DateTime(get!(NaiveDateTime)),
        "TIMESTAMPTZ" => Value::DateTimeTz(get!(DateTime<Utc>).fixed_offset()),
        "BOOL[]" => list!(bool, Value::Bool),
        "INT2[]" => list!(i16, |x| Value::Int(x.into())),
        "INT4[]" => list!(i32, |x| Value::Int(x.into())),
        "INT8[]" => list!(i64, Value::Int),
        "FLOAT4[]" => list!(f32, |x| Value::Float(x.into())),
        "FLOAT8[]" => list!(f64, Value::Float),
        "NUMERIC[]" => list!(BigDecimal, Value::Decimal),
        "TEXT[]" | "VARCHAR[]" | "BPCHAR[]" | "NAME[]" => list!(String, Value::Text),
        "BYTEA[]" => list!(Vec<u8>, Value::Bytes),
        "UUID[]" => list!(Uuid, Value::Uuid),
        "JSON[]" | "JSONB[]" => list!(serde_json::Value, Value::Json),
        "DATE[]" => list!(NaiveDate, Value::Date),
        "TIME[]" => list!(NaiveTime, Value::Time),
        "TIMESTAMP[]" => list!(NaiveDateTime, Value::DateTime),
        "TIMESTAMPTZ[]" => list!(DateTime<Utc>, |x: DateTime<Utc>| Value::DateTimeTz(x.fixed_offset())),
        // Enums and domains over text arrive as their text.
        other => match row.try_get_unchecked::<String, _>(i) {
            Ok(s) => Value::Text(s),
            Err(_) => {
                return Err(Error::Param(format!(
                "column {i} has the PostgreSQL type {other}, which Cello does not decode; cast it in SQL (e.g. ::text)"
            )))
            }
        },
    })
}
