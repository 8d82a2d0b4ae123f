//! Field checks read from a type's own JSON Schema (`minimum` (with `exclusiveMinimum: true`), `maximum`,
//! `minLength`, `pattern`, `enum`), so a range is declared once — as a `#[schemars(...)]`
//! attribute — and enforced the same way here and by the Python views (`cello/config.py`).

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::error::{invalid, Result};

/// Check every top-level field of `value` against the constraints of its schema;
/// errors name the field as `{prefix}.{field}` (or just `field` when `prefix` is empty).
pub fn check_fields<T: Serialize + JsonSchema>(prefix: &str, value: &T) -> Result<()> {
    let schema = schemars::schema_for!(T);
    let data = serde_json::to_value(value).map_err(|e| invalid(prefix, e.to_string()))?;
    let (Some(props), Some(data)) = (schema.get("properties").and_then(Value::as_object), data.as_object()) else {
        return Ok(());
    };
    for (name, prop) in props {
        let Some(v) = data.get(name) else { continue };
        let field = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        check_value(&field, prop, v)?;
    }
    Ok(())
}

fn check_value(field: &str, prop: &Value, v: &Value) -> Result<()> {
    if v.is_null() {
        return Ok(());
    }
    if let Some(allowed) = prop.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().filter(|a| !a.is_null()).map(Value::to_string).collect();
            return Err(invalid(field, format!("must be one of {}, got {v}", list.join(", "))));
        }
    }
    if let Some(n) = v.as_f64() {
        // `exclusiveMinimum: true` beside `minimum` (the OpenAPI 3.0 form Kubernetes accepts).
        let exclusive = prop.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
        if let Some(min) = prop.get("minimum").and_then(Value::as_f64) {
            if exclusive && n <= min {
                return Err(invalid(field, format!("must be greater than {min}, got {v}")));
            }
            if n < min {
                return Err(invalid(field, format!("must be at least {min}, got {v}")));
            }
        }
        if let Some(max) = prop.get("maximum").and_then(Value::as_f64) {
            if n > max {
                return Err(invalid(field, format!("must be at most {max}, got {v}")));
            }
        }
    }
    if let Some(s) = v.as_str() {
        if let Some(min) = prop.get("minLength").and_then(Value::as_u64) {
            if (s.chars().count() as u64) < min {
                return Err(invalid(field, "cannot be empty"));
            }
        }
        if let Some(pattern) = prop.get("pattern").and_then(Value::as_str) {
            let re = regex::Regex::new(pattern).map_err(|e| invalid(field, e.to_string()))?;
            if !re.is_match(s) {
                return Err(invalid(field, format!("{v} does not match {pattern}")));
            }
        }
    }
    Ok(())
}
