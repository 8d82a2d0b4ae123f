//! The CRD: generated == committed, structural-schema rules, and every CEL rule client-side
//! with one passing and one failing fragment.

use std::collections::BTreeSet;

use cello_operator::crd::CellApp;
use kube::core::cel::{analyze_rule, compile_schema, ScopeContext, WarningKind};
use kube::CustomResourceExt;
use serde::Deserialize;
use serde_json::{json, Value};

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/cellapp.yaml")
}

#[test]
fn committed_crd_matches_generated() {
    let generated = cello_operator::crd_yaml().expect("generate CRD");
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        generated == committed,
        "crds/cellapp.yaml is stale: run `cargo run -p cello-operator --bin crdgen -- --write` and commit it"
    );
}

#[test]
fn every_generated_file_is_committed_unchanged() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (rel, content) in cello_operator::chart::generated_files().expect("generate") {
        let committed = std::fs::read_to_string(root.join(rel)).unwrap_or_default();
        assert!(
            committed == content,
            "{rel} is stale: run `cargo run -p cello-operator --bin crdgen -- --write`"
        );
    }
}

#[test]
fn chart_values_yaml_is_the_rust_default() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/cello-operator/values.yaml");
    let text = std::fs::read_to_string(path).expect("values.yaml");
    let values: cello_operator::chart::ChartValues =
        serde_yaml::from_str(&text).expect("values.yaml matches ChartValues");
    assert_eq!(values, cello_operator::chart::ChartValues::default());
}

fn schema() -> Value {
    let crd = serde_json::to_value(CellApp::crd()).expect("CRD to JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Walks every schema node with its JSON path.
fn walk<'a>(node: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.clone(), node));
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(v, format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, format!("{path}[]"), out);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(ap, format!("{path}{{}}"), out);
    }
}

#[test]
fn schema_is_structural() {
    let root = schema();
    let mut nodes = Vec::new();
    walk(&root, String::new(), &mut nodes);
    let mut problems = Vec::new();
    for (path, node) in &nodes {
        let obj = node.as_object().expect("schema node is an object");
        // Every node states its type, except the two extensions that stand for "any shape".
        let untyped_ok = obj.get("x-kubernetes-int-or-string") == Some(&json!(true))
            || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        if !obj.contains_key("type") && !untyped_ok {
            problems.push(format!("{path}: no type"));
        }
        for banned in [
            "$ref",
            "oneOf",
            "anyOf",
            "allOf",
            "not",
            "definitions",
            "$defs",
            "uniqueItems",
        ] {
            if obj.contains_key(banned) {
                problems.push(format!("{path}: has {banned}"));
            }
        }
        if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
            problems.push(format!("{path}: properties together with additionalProperties"));
        }
        // Older API servers reject these; we only use `message`.
        if let Some(rules) = obj.get("x-kubernetes-validations").and_then(Value::as_array) {
            for r in rules {
                for banned in ["messageExpression", "optionalOldSelf"] {
                    if r.get(banned).is_some() {
                        problems.push(format!("{path}: rule uses {banned}"));
                    }
                }
            }
        }
        // A list-map's keys must be required in its items, or server-side apply cannot merge.
        if obj.get("x-kubernetes-list-type") == Some(&json!("map")) {
            let keys = obj["x-kubernetes-list-map-keys"].as_array().expect("map keys");
            let required: BTreeSet<&str> = obj["items"]["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for k in keys {
                let k = k.as_str().unwrap_or_default();
                if !required.contains(k) {
                    problems.push(format!("{path}: list-map key {k} not required in items"));
                }
            }
        }
    }
    let crd = serde_json::to_value(CellApp::crd()).expect("CRD to JSON");
    assert!(crd["spec"]["versions"][0].get("selectableFields").is_none());
    assert!(
        problems.is_empty(),
        "structural-schema problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    let root = schema();
    let mut nodes = Vec::new();
    walk(&root, String::new(), &mut nodes);
    let mut warnings = Vec::new();
    for (path, node) in nodes {
        let Some(rules) = node.get("x-kubernetes-validations").and_then(Value::as_array) else {
            continue;
        };
        let compiled = compile_schema(node);
        assert!(!compiled.has_errors(), "{path}: {:?}", compiled.compilation_errors());
        for r in rules {
            let rule = r["rule"].as_str().expect("rule text");
            // kube-cel 0.8's scope check does not know comprehension variables (`c` in
            // `all(c, ...)`), so only the cost and bounds findings are asserted.
            for w in analyze_rule(rule, &compiled, ScopeContext::CrdValidation)
                .into_iter()
                .filter(|w| w.kind != WarningKind::WrongScope)
            {
                warnings.push(format!("{path}: {} ({:?})", w.message, w.kind));
            }
        }
    }
    assert!(warnings.is_empty(), "{}", warnings.join("\n"));
}

#[test]
fn crd_names_subresources_and_columns() {
    let crd = CellApp::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("cellapps.cello.dev"));
    assert_eq!(crd.spec.names.short_names, Some(vec!["cell".to_string()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["cello".to_string()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    let sub = v.subresources.as_ref().expect("subresources");
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
    let cols: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Ready", "Replicas", "URL", "Reason", "Age"]);
    let spec = &schema()["properties"]["spec"];
    assert_eq!(spec["required"], json!(["app", "image"]));
    for list in ["queues", "consumers", "envVars", "imagePullSecrets"] {
        assert_eq!(spec["properties"][list]["x-kubernetes-list-type"], "map", "{list}");
        assert_eq!(
            spec["properties"][list]["x-kubernetes-list-map-keys"],
            json!(["name"]),
            "{list}"
        );
    }
    assert_eq!(
        schema()["properties"]["status"]["properties"]["conditions"]["x-kubernetes-list-map-keys"],
        json!(["type"])
    );
}

fn app(spec: Value) -> CellApp {
    let mut full = json!({"image": "ghcr.io/acme/shop:1.0", "app": "shop.main:app"});
    merge(&mut full, spec);
    let obj = json!({
        "apiVersion": "cello.dev/v1alpha1", "kind": "CellApp",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": full,
    });
    serde_json::from_value(obj).expect("fixture deserializes")
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

#[test]
fn only_image_and_app_is_valid() {
    let minimal: CellApp = serde_yaml::from_str(
        "apiVersion: cello.dev/v1alpha1\nkind: CellApp\nmetadata: {name: hello, namespace: default}\n\
         spec: {image: 'ghcr.io/acme/hello:1', app: 'hello:app'}\n",
    )
    .expect("minimal CellApp parses");
    assert_eq!(minimal.spec.port, 8000);
    assert_eq!(minimal.spec.workers, 1);
    minimal.validate_cel().expect("minimal CellApp passes CEL");
}

const KAFKA: &str = r#"{"name":"orders","kind":"kafka","topic":"orders","bootstrapServers":"kafka:9092"}"#;

/// (rule, spec fragment that passes, spec fragment that fails). Each rule's failing fragment
/// must fail with exactly that rule, so a rule that never fires is caught.
fn cases() -> Vec<(&'static str, Value, Value)> {
    let kafka: Value = serde_json::from_str(KAFKA).expect("kafka fixture");
    vec![
        (
            "self.matches('^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$')",
            json!({"app": "pkg.mod:create_app"}),
            json!({"app": "pkg/mod.py"}),
        ),
        (
            "!has(self.replicas) || !has(self.autoscaling) || self.autoscaling.mode == 'none'",
            json!({"replicas": 3, "autoscaling": {"mode": "none"}}),
            json!({"replicas": 3, "autoscaling": {"mode": "hpa"}}),
        ),
        (
            "!has(self.autoscaling) || self.autoscaling.mode != 'keda' || (has(self.queues) && size(self.queues) > 0)",
            json!({"autoscaling": {"mode": "keda"}, "queues": [kafka.clone()]}),
            json!({"autoscaling": {"mode": "keda"}}),
        ),
        (
            "!has(self.consumers) || self.consumers.all(c, has(self.queues) && self.queues.exists(q, q.name == c.queue))",
            json!({"queues": [kafka.clone()], "consumers": [{"name": "w", "queue": "orders", "handler": "shop.w:run"}]}),
            json!({"queues": [kafka.clone()], "consumers": [{"name": "w", "queue": "nope", "handler": "shop.w:run"}]}),
        ),
        (
            "!has(self.tls) || self.tls.termination != 'ingress' || has(self.ingress)",
            json!({"tls": {"secretName": "t", "termination": "pod"}}),
            json!({"tls": {"secretName": "t", "termination": "ingress"}}),
        ),
        (
            "!has(self.sidecar) || self.mode == 'sidecar'",
            json!({"mode": "sidecar", "sidecar": {"appPort": 9000}}),
            json!({"mode": "embedded", "sidecar": {"appPort": 9000}}),
        ),
        (
            "self.mode != 'sidecar' || !has(self.sidecar) || self.sidecar.appPort != self.port",
            json!({"mode": "sidecar", "port": 8000, "sidecar": {"appPort": 8080}}),
            json!({"mode": "sidecar", "port": 8000, "sidecar": {"appPort": 8000}}),
        ),
        (
            "self.startsWith('/')",
            json!({"probes": {"liveness": {"path": "/livez"}}, "ingress": {"host": "a.example", "path": "/"}, "metrics": {"path": "/m"}}),
            json!({"probes": {"liveness": {"path": "livez"}}}),
        ),
        (
            "self.matches('^[0-9]+(ms|s|m|h)$')",
            json!({"metrics": {"interval": "15s"}}),
            json!({"metrics": {"interval": "often"}}),
        ),
        (
            "has(self.secretName) != has(self.issuerRef)",
            json!({"tls": {"issuerRef": {"name": "le"}, "termination": "pod"}}),
            json!({"tls": {"secretName": "t", "issuerRef": {"name": "le"}, "termination": "pod"}}),
        ),
        (
            "self.maxReplicas >= self.minReplicas",
            json!({"autoscaling": {"mode": "hpa", "minReplicas": 2, "maxReplicas": 2}}),
            json!({"autoscaling": {"mode": "hpa", "minReplicas": 5, "maxReplicas": 2}}),
        ),
        (
            "self.kind != 'kafka' || (has(self.topic) && has(self.bootstrapServers))",
            json!({"queues": [kafka.clone()]}),
            json!({"queues": [{"name": "orders", "kind": "kafka", "topic": "orders"}]}),
        ),
        (
            "self.kind != 'rabbitmq' || (has(self.queueName) && has(self.hostSecret))",
            json!({"queues": [{"name": "jobs", "kind": "rabbitmq", "queueName": "jobs", "hostSecret": {"name": "rmq", "key": "url"}}]}),
            json!({"queues": [{"name": "jobs", "kind": "rabbitmq", "queueName": "jobs"}]}),
        ),
        (
            "self.kind != 'redis' || (has(self.address) && has(self.listName) != has(self.streamName))",
            json!({"queues": [{"name": "q", "kind": "redis", "listName": "q", "address": "redis:6379"},
                              {"name": "s", "kind": "redis", "streamName": "s", "address": "redis:6379"}]}),
            json!({"queues": [{"name": "q", "kind": "redis", "listName": "q", "streamName": "q", "address": "redis:6379"}]}),
        ),
        (
            "self.kind != 'sqs' || (has(self.queueUrl) && has(self.region))",
            json!({"queues": [{"name": "q", "kind": "sqs", "queueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q", "region": "eu-west-1"}]}),
            json!({"queues": [{"name": "q", "kind": "sqs", "queueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q"}]}),
        ),
        (
            "has(self.accessKeyIdSecret) == has(self.secretAccessKeySecret)",
            json!({"queues": [{"name": "q", "kind": "sqs", "queueUrl": "u", "region": "r",
                               "accessKeyIdSecret": {"name": "aws", "key": "id"},
                               "secretAccessKeySecret": {"name": "aws", "key": "secret"}}]}),
            json!({"queues": [{"name": "q", "kind": "sqs", "queueUrl": "u", "region": "r",
                               "accessKeyIdSecret": {"name": "aws", "key": "id"}}]}),
        ),
        (
            "self.matches('^[a-z]([a-z0-9-]*[a-z0-9])?$')",
            json!({"queues": [kafka.clone()], "consumers": [{"name": "email-worker", "queue": "orders", "handler": "a:b"}]}),
            json!({"queues": [{"name": "Orders_1", "kind": "kafka", "topic": "o", "bootstrapServers": "k:9092"}]}),
        ),
        (
            "!(has(self.minAvailable) && has(self.maxUnavailable))",
            json!({"disruption": {"minAvailable": 1}}),
            json!({"disruption": {"minAvailable": 1, "maxUnavailable": "50%"}}),
        ),
    ]
}

#[test]
fn every_cel_rule_has_a_passing_and_a_failing_fragment() {
    let mut tested = BTreeSet::new();
    for (rule, good, bad) in cases() {
        tested.insert(rule.to_string());
        if let Err(e) = app(good.clone()).validate_cel() {
            panic!("passing fragment for `{rule}` failed: {good}\n{e:?}");
        }
        let errs = match app(bad.clone()).validate_cel() {
            Ok(()) => panic!("failing fragment for `{rule}` passed: {bad}"),
            Err(e) => e.into_vec(),
        };
        assert!(
            errs.iter().all(|e| e.rule == rule),
            "failing fragment for `{rule}` failed other rules too: {:?}",
            errs.iter().map(|e| e.rule.clone()).collect::<Vec<_>>()
        );
    }
    // Every rule in the CRD is covered by the table above.
    let mut nodes = Vec::new();
    let root = schema();
    walk(&root, String::new(), &mut nodes);
    let in_crd: BTreeSet<String> = nodes
        .iter()
        .filter_map(|(_, n)| n.get("x-kubernetes-validations").and_then(Value::as_array))
        .flatten()
        .filter_map(|r| r["rule"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        in_crd, tested,
        "CEL rules without a test (or tests for rules that no longer exist)"
    );
}

#[test]
fn every_example_manifest_passes_cel() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    // examples/k8s/ and each example app's own manifests (examples/<app>/k8s/).
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(examples.join("k8s"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    for app in std::fs::read_dir(&examples).into_iter().flatten().flatten() {
        paths.extend(
            std::fs::read_dir(app.path().join("k8s"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        );
    }
    let mut seen = 0;
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).expect("example YAML");
            if value.get("kind").and_then(|k| k.as_str()) != Some("CellApp") {
                continue;
            }
            let app: CellApp = serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            app.validate_cel()
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            seen += 1;
        }
    }
    assert!(
        seen >= 6,
        "expected the five example CellApps of examples/k8s and the one of examples/orders/k8s, found {seen}"
    );
}
