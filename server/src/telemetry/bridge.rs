//! Spans made outside the data plane (by the Python `opentelemetry` SDK in a handler)
//! join the server's export pipeline, so one batch queue and one OTLP connection carry
//! every span of the process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// String.
    Str(String),
    /// Homogeneous list (mixed lists become strings).
    List(Vec<AttrValue>),
}

fn to_value(v: AttrValue) -> Value {
    match v {
        AttrValue::Bool(b) => Value::Bool(b),
        AttrValue::Int(i) => Value::I64(i),
        AttrValue::Float(f) => Value::F64(f),
        AttrValue::Str(s) => Value::String(s.into()),
        AttrValue::List(items) => {
            if items.iter().all(|i| matches!(i, AttrValue::Bool(_))) {
                Value::Array(Array::Bool(
                    items.into_iter().map(|i| matches!(i, AttrValue::Bool(true))).collect(),
                ))
            } else if items.iter().all(|i| matches!(i, AttrValue::Int(_))) {
                Value::Array(Array::I64(
                    items
                        .into_iter()
                        .map(|i| if let AttrValue::Int(n) = i { n } else { 0 })
                        .collect(),
                ))
            } else if items.iter().all(|i| matches!(i, AttrValue::Float(_))) {
                Value::Array(Array::F64(
                    items
                        .into_iter()
                        .map(|i| if let AttrValue::Float(n) = i { n } else { 0.0 })
                        .collect(),
                ))
            } else {
                Value::Array(Array::String(
                    items
                        .into_iter()
                        .map(|i| StringValue::from(to_value(i).as_str().into_owned()))
                        .collect(),
                ))
            }
        }
    }
}

/// An event: (name, time in ns since the Unix epoch, attributes).
pub type ForeignEvent = (String, u64, Vec<(String, AttrValue)>);

/// A finished span in plain types.
#[derive(Debug, Clone, Default)]
pub struct ForeignSpan {
    /// Span name.
    pub name: String,
    /// 128-bit trace id.
    pub trace_id: u128,
    /// 64-bit span id.
    pub span_id: u64,
    /// Parent span id (0: none).
    pub parent_span_id: u64,
    /// The parent came from another process.
    pub parent_is_remote: bool,
    /// W3C trace flags (bit 0: sampled).
    pub trace_flags: u8,
    /// W3C `tracestate` header value.
    pub trace_state: String,
    /// 0 internal, 1 server, 2 client, 3 producer, 4 consumer (the Python SDK's numbering).
    pub kind: u8,
    /// Start, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_ns: u64,
    /// Attributes.
    pub attributes: Vec<(String, AttrValue)>,
    /// Events: (name, time ns, attributes).
    pub events: Vec<ForeignEvent>,
    /// 0 unset, 1 ok, 2 error.
    pub status_code: u8,
    /// Error description.
    pub status_description: String,
    /// Instrumentation scope name and version.
    pub scope: (String, Option<String>),
}

fn attrs(list: Vec<(String, AttrValue)>) -> Vec<KeyValue> {
    list.into_iter().map(|(k, v)| KeyValue::new(k, to_value(v))).collect()
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

impl ForeignSpan {
    /// Convert to the SDK's span record.
    pub fn into_span_data(self) -> SpanData {
        let state = TraceState::from_key_value(
            self.trace_state
                .split(',')
                .filter_map(|kv| kv.trim().split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default();
        let span_context = SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(self.span_id),
            TraceFlags::new(self.trace_flags),
            false,
            state,
        );
        let events = self
            .events
            .into_iter()
            .map(|(name, ns, a)| opentelemetry::trace::Event::new(name, time(ns), attrs(a), 0))
            .collect();
        let mut scope = InstrumentationScope::builder(self.scope.0);
        if let Some(v) = self.scope.1 {
            scope = scope.with_version(v);
        }
        SpanData {
            span_context,
            parent_span_id: SpanId::from(self.parent_span_id),
            parent_span_is_remote: self.parent_is_remote,
            span_kind: match self.kind {
                1 => SpanKind::Server,
                2 => SpanKind::Client,
                3 => SpanKind::Producer,
                4 => SpanKind::Consumer,
                _ => SpanKind::Internal,
            },
            name: self.name.into(),
            start_time: time(self.start_ns),
            end_time: time(self.end_ns),
            attributes: attrs(self.attributes),
            dropped_attributes_count: 0,
            events: {
                let mut e = SpanEvents::default();
                e.events = events;
                e
            },
            links: SpanLinks::default(),
            status: match self.status_code {
                1 => Status::Ok,
                2 => Status::error(self.status_description),
                _ => Status::Unset,
            },
            instrumentation_scope: scope.build(),
        }
    }
}
