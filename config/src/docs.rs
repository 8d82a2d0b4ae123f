//! Generated reference docs: `docs/config.md` (every kind) and `docs/env.md` (every variable).
//! `crdgen --write` writes them with the CRD; `crdgen --check` (in `make test-operator`) fails
//! when the committed files drift.

use serde_json::Value;

/// `docs/config.md`: one table per config kind, from the same description Python uses.
pub fn config_markdown() -> String {
    let kinds = crate::kinds::describe();
    let mut out = String::from(
        "# Configuration reference\n\n<!-- generated from cello-config by `make generate`; do not edit -->\n\n\
         Each Python class in `cello.config` is a view over the Rust type of the same name in\n\
         `cello-config`. `ServerConfig` (cello.yaml, `CellApp.spec.server`) takes the server\n\
         sections under their camelCase names (`limits`, `timeouts`, `http2`, `threadpool`,\n\
         `prometheus`, `health`, `telemetry`, `tls`, `http3`, `jwt`, `apiKey`, `basicAuth`,\n\
         `rateLimit`, `session`, `csrf`, `securityHeaders`, `staticFiles`, ...).\n\
         snake_case names are accepted everywhere.\n",
    );
    out.push_str("\n## ServerConfig (cello.yaml, `CellApp.spec.server`)\n\n| key | meaning |\n|---|---|\n");
    let server = schemars::schema_for!(crate::ServerConfig);
    for (key, prop) in server
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let desc = prop["description"].as_str().unwrap_or("").replace('\n', " ");
        out.push_str(&format!("| `{key}` | {desc} |\n"));
    }
    for kind in crate::kinds::KINDS {
        let k = &kinds[kind.name];
        out.push_str(&format!("\n## {}\n\n", kind.name));
        if let Some(doc) = k["doc"].as_str() {
            out.push_str(&doc.replace('\n', " "));
            out.push_str("\n\n");
        }
        out.push_str("| field | wire | type | default | meaning |\n|---|---|---|---|---|\n");
        let python = k["fields"].as_array().into_iter().flatten().map(|f| (f, false));
        let yaml_only = k["yaml_only"].as_array().into_iter().flatten().map(|f| (f, true));
        for (f, yaml_only) in python.chain(yaml_only) {
            let schema = &f["schema"];
            let ty = match &schema["type"] {
                Value::String(s) => s.clone(),
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" \\| "),
                _ => "object".into(),
            };
            let default = if f["required"] == true {
                "required".to_owned()
            } else if f["default"].is_null() {
                "unset".to_owned()
            } else {
                format!("`{}`", f["default"])
            };
            let mut desc = schema["description"]
                .as_str()
                .unwrap_or("")
                .replace('\n', " ")
                .replace('|', "\\|");
            if yaml_only {
                desc.push_str(" *cello.yaml / `CellApp.spec.server` only (not a constructor argument).*");
            }
            out.push_str(&format!(
                "| `{}` | `{}` | {ty} | {default} | {desc} |\n",
                f["name"].as_str().unwrap_or(""),
                f["wire"].as_str().unwrap_or(""),
            ));
        }
    }
    out
}

/// `docs/env.md`.
pub fn env_markdown() -> String {
    crate::env::markdown()
}
