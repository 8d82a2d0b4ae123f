//! The values that cross between Python and the SQL drivers, one enum for every backend.

use bigdecimal::BigDecimal;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use uuid::Uuid;

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Decimal(BigDecimal),
    Uuid(Uuid),
    /// A `dict` (or a value wrapped in `Json`) as a parameter; JSON/JSONB columns.
    Json(serde_json::Value),
    Date(NaiveDate),
    Time(NaiveTime),
    /// `timestamp` without a zone (a naive `datetime`).
    DateTime(NaiveDateTime),
    /// `timestamptz` (an aware `datetime`; the offset is kept on the way in).
    DateTimeTz(DateTime<FixedOffset>),
    /// A PostgreSQL array (one-dimensional); elsewhere a list parameter is JSON.
    Array(Vec<Value>),
}

impl Value {
    /// The name used in error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Text(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Decimal(_) => "Decimal",
            Value::Uuid(_) => "UUID",
            Value::Json(_) => "JSON",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::DateTime(_) => "datetime",
            Value::DateTimeTz(_) => "datetime (aware)",
            Value::Array(_) => "list",
        }
    }

    /// A list parameter as JSON (MySQL and SQLite have no arrays).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Text(s) => J::String(s.clone()),
            Value::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
            Value::Decimal(d) => J::String(d.to_string()),
            Value::Uuid(u) => J::String(u.to_string()),
            Value::Json(j) => j.clone(),
            Value::Date(d) => J::String(d.to_string()),
            Value::Time(t) => J::String(t.to_string()),
            Value::DateTime(t) => J::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            Value::DateTimeTz(t) => J::String(t.to_rfc3339()),
            Value::Array(items) => J::Array(items.iter().map(Value::to_json).collect()),
        }
    }
}

/// Rows as they come back: shared column names and the values of each row.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub columns: std::sync::Arc<[String]>,
    pub rows: Vec<Vec<Value>>,
}
