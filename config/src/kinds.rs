//! The registry of config kinds the Python API exposes (`cello.config`): one entry per class
//! of API.md. Python builds its classes from [`describe`] at import and validates through
//! [`validate`], so names, order, defaults and ranges are declared only on the Rust types.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// One Python config class.
pub struct Kind {
    /// Python class name.
    pub name: &'static str,
    /// Fields without a default in Python (positional, required), snake_case.
    pub required: &'static [&'static str],
    /// Fields Python does not expose as constructor parameters (they keep the Rust default).
    pub hidden: &'static [&'static str],
    describe: fn(&Kind) -> Value,
    check: fn(&str, bool) -> Result<String>,
}

macro_rules! kind {
    ($ty:ty, $name:literal $(, required = [$($r:literal),*])? $(, hidden = [$($h:literal),*])?) => {
        Kind {
            name: $name,
            required: &[$($($r),*)?],
            hidden: &[$($($h),*)?],
            describe: |k| describe_type::<$ty>(k),
            check: |text, full| {
                let value: $ty = parse(text)?;
                if full {
                    value.validate()?;
                }
                serde_json::to_string(&value).map_err(|e| Error::Parse(e.to_string()))
            },
        }
    };
}

/// Every kind, in API.md's order.
pub static KINDS: &[Kind] = &[
    kind!(crate::TimeoutConfig, "TimeoutConfig"),
    kind!(
        crate::LimitsConfig,
        "LimitsConfig",
        hidden = ["max_headers", "max_buffered_bytes"]
    ),
    kind!(crate::ThreadPoolConfig, "ThreadPoolConfig"),
    kind!(crate::ClusterConfig, "ClusterConfig"),
    kind!(crate::TlsConfig, "TlsConfig", required = ["cert_path", "key_path"]),
    kind!(
        crate::Http2Config,
        "Http2Config",
        hidden = ["max_buffered_per_connection", "max_buffered_total"]
    ),
    kind!(crate::Http3Config, "Http3Config"),
    kind!(crate::WebSocketConfig, "WebSocketConfig"),
    kind!(
        crate::JwtConfig,
        "JwtConfig",
        required = ["secret"],
        hidden = ["exclude_paths"]
    ),
    kind!(
        crate::RateLimitConfig,
        "RateLimitConfig",
        hidden = ["routes", "routes_only"]
    ),
    kind!(crate::SessionConfig, "SessionConfig"),
    kind!(crate::SecurityHeadersConfig, "SecurityHeadersConfig", hidden = ["csp"]),
    kind!(crate::CspConfig, "CSP"),
    kind!(crate::StaticFilesConfig, "StaticFilesConfig", required = ["root"]),
    kind!(
        crate::OpenTelemetryConfig,
        "OpenTelemetryConfig",
        required = ["service_name"]
    ),
    kind!(crate::HealthCheckConfig, "HealthCheckConfig"),
    kind!(crate::DatabaseConfig, "DatabaseConfig", required = ["url"]),
    kind!(crate::RedisConfig, "RedisConfig"),
    kind!(crate::GraphQLConfig, "GraphQLConfig"),
    kind!(crate::GrpcConfig, "GrpcConfig"),
    kind!(crate::KafkaConfig, "KafkaConfig"),
    kind!(crate::RabbitMQConfig, "RabbitMQConfig"),
    kind!(crate::SqsConfig, "SqsConfig"),
    kind!(crate::EventSourcingConfig, "EventSourcingConfig"),
    kind!(crate::CqrsConfig, "CqrsConfig"),
    kind!(crate::SagaConfig, "SagaConfig"),
];

fn parse<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Parse(e.to_string()))
}

fn find(name: &str) -> Result<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| Error::Parse(format!("unknown config kind `{name}`")))
}

/// Parse `json` as the kind `name` and run its `validate()`; returns the value as JSON with
/// every field filled in.
pub fn validate(name: &str, json: &str) -> Result<String> {
    (find(name)?.check)(json, true)
}

/// Parse only (types and unknown fields), no `validate()`.
pub fn parse_kind(name: &str, json: &str) -> Result<String> {
    (find(name)?.check)(json, false)
}

/// Every kind as `{name: {doc, fields: [{name, wire, required, default, schema}], schema}}`;
/// `fields` keep declaration order (the Python constructor's parameter order).
pub fn describe() -> Value {
    let map: serde_json::Map<String, Value> = KINDS.iter().map(|k| (k.name.to_owned(), (k.describe)(k))).collect();
    Value::Object(map)
}

fn describe_type<T: Default + Serialize + JsonSchema>(kind: &Kind) -> Value {
    let schema = schemars::schema_for!(T);
    let schema = schema.as_value();
    // serde_yaml's mapping keeps the struct's field order; serde_json's map would sort it.
    let defaults = serde_yaml::to_value(T::default()).unwrap_or_default();
    let (mut fields, mut yaml_only) = (Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    if let serde_yaml::Value::Mapping(m) = defaults {
        for (key, value) in m {
            let Some(wire) = key.as_str() else { continue };
            seen.insert(wire.to_owned());
            let name = to_snake(wire);
            let default = serde_json::to_value(&value).unwrap_or(Value::Null);
            let prop = schema
                .pointer(&format!("/properties/{wire}"))
                .cloned()
                .unwrap_or(Value::Null);
            let field = json!({
                "name": name,
                "wire": wire,
                "required": kind.required.contains(&name.as_str()),
                "default": default,
                "schema": prop,
            });
            if kind.hidden.contains(&name.as_str()) {
                yaml_only.push(field);
            } else {
                fields.push(field);
            }
        }
    }
    // Optional settings whose default is "unset" do not serialise: cello.yaml-only too.
    for (wire, prop) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if !seen.contains(wire) && !kind.required.contains(&to_snake(wire).as_str()) {
            yaml_only.push(json!({
                "name": to_snake(wire),
                "wire": wire,
                "required": false,
                "default": Value::Null,
                "schema": prop,
            }));
        }
    }
    json!({
        "doc": schema.get("description").cloned().unwrap_or(Value::Null),
        "fields": fields,
        // Settings of cello.yaml / `CellApp.spec.server` that are not constructor arguments
        // of the Python class (API.md fixes those signatures).
        "yaml_only": yaml_only,
        "schema": schema,
    })
}

/// `readHeader` → `read_header`, `enable0rtt` → `enable_0rtt`; snake_case stays as it is.
pub fn to_snake(wire: &str) -> String {
    let mut out = String::with_capacity(wire.len() + 4);
    let mut prev_lower = false;
    for c in wire.chars() {
        if c.is_ascii_uppercase() || (c.is_ascii_digit() && prev_lower) {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
        prev_lower = c.is_ascii_lowercase();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_names_are_accepted_on_the_wire() {
        let all = describe();
        for kind in KINDS {
            let fields = all[kind.name]["fields"].as_array().unwrap();
            assert!(!fields.is_empty(), "{}", kind.name);
            let mut obj = serde_json::Map::new();
            for f in fields {
                obj.insert(f["name"].as_str().unwrap().to_owned(), f["default"].clone());
            }
            let back = parse_kind(kind.name, &Value::Object(obj).to_string()).unwrap();
            assert!(back.starts_with('{'), "{}", kind.name);
            for r in kind.required {
                assert!(fields.iter().any(|f| f["name"] == *r), "{}.{r}", kind.name);
            }
        }
    }

    #[test]
    fn to_snake_rules() {
        assert_eq!(to_snake("readHeader"), "read_header");
        assert_eq!(to_snake("enable0rtt"), "enable_0rtt");
        assert_eq!(to_snake("max_age"), "max_age");
        assert_eq!(to_snake("xXssProtection"), "x_xss_protection");
    }

    #[test]
    fn cross_field_checks_name_the_problem() {
        let err = validate("JwtConfig", r#"{"secret":"short"}"#).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        let err = validate("SessionConfig", r#"{"cookie_same_site":"None","cookie_secure":false}"#).unwrap_err();
        assert!(err.to_string().contains("cookie_secure"), "{err}");
        let err = validate("RateLimitConfig", r#"{"algorithm":"adaptive"}"#).unwrap_err();
        assert!(err.to_string().contains("min_capacity"), "{err}");
        let err = validate("TlsConfig", r#"{"cert_path":"c","key_path":"k","min_version":"1.0"}"#).unwrap_err();
        assert!(err.to_string().contains("'1.2' or '1.3'"), "{err}");
        let err = validate("SqsConfig", r#"{"max_messages":11}"#).unwrap_err();
        assert!(err.to_string().contains("max_messages"), "{err}");
        validate("JwtConfig", &format!(r#"{{"secret":{:?}}}"#, vec![0u8; 16])).unwrap_err();
        validate(
            "JwtConfig",
            &format!(r#"{{"secret":{:?},"algorithm":"HS384"}}"#, vec![0u8; 48]),
        )
        .unwrap();
    }
}
