//! Snapshot tests of the desired children over the fixture matrix of OPERATOR.md.
//!
//! Snapshots live in `tests/snapshots/<fixture>.yaml` (one YAML document per child, a comment
//! header with the rest of the plan). They are also validated against real Kubernetes schemas by
//! `tests/operator/validate_manifests.py`. Update with `CELLO_UPDATE_SNAPSHOTS=1 cargo test ...`.

mod common;

use std::collections::BTreeMap;

use cello_operator::resources::{desired, Capabilities, Desired, Kind, ReferencedData};
use serde_json::{json, Value};

fn render(name: &str, d: &Desired) -> String {
    let mut out = format!(
        "# fixture: {name}\n# configHash: {}\n# selector: {}\n# url: {}\n# paused: {}\n",
        d.config_hash, d.selector, d.url, d.paused
    );
    for s in &d.skipped {
        out.push_str(&format!(
            "# skipped: {} (CRDNotInstalled; {})\n",
            s.kind.name(),
            s.because
        ));
    }
    for c in &d.children {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&c.object).expect("child to YAML"));
    }
    out
}

#[test]
fn snapshots_match() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let update = std::env::var_os("CELLO_UPDATE_SNAPSHOTS").is_some();
    let mut stale = Vec::new();
    let mut expected_files = Vec::new();
    for (name, spec, caps) in common::matrix() {
        let app = common::app(spec);
        app.validate_cel()
            .unwrap_or_else(|e| panic!("fixture {name} violates a CEL rule: {e:?}"));
        let d = desired(&app, &caps, &ReferencedData::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = render(name, &d);
        let path = dir.join(format!("{name}.yaml"));
        expected_files.push(format!("{name}.yaml"));
        if update {
            std::fs::write(&path, &text).expect("write snapshot");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    // No snapshot without a fixture: a removed fixture must take its file with it.
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("snapshot dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    expected_files.sort();
    assert_eq!(on_disk, expected_files, "snapshot files and fixtures differ");
    assert!(
        stale.is_empty(),
        "stale snapshots {stale:?}: review and rerun with CELLO_UPDATE_SNAPSHOTS=1"
    );
}

fn plan(spec: Value, caps: Capabilities) -> Desired {
    desired(&common::app(spec), &caps, &ReferencedData::new()).expect("desired")
}

fn kinds(d: &Desired) -> Vec<(Kind, &str)> {
    d.children.iter().map(|c| (c.kind, c.name.as_str())).collect()
}

fn child(d: &Desired, kind: Kind, name: &str) -> Value {
    d.children
        .iter()
        .find(|c| c.kind == kind && c.name == name)
        .map(|c| c.object.clone())
        .expect("child exists")
}

#[test]
fn minimal_app_has_configmap_service_deployment_and_a_monitor() {
    let d = plan(json!({}), Capabilities::all());
    assert_eq!(
        kinds(&d),
        [
            (Kind::ConfigMap, "shop-config"),
            (Kind::Service, "shop"),
            (Kind::Deployment, "shop"),
            (Kind::ServiceMonitor, "shop")
        ]
    );
    let dep = child(&d, Kind::Deployment, "shop");
    assert_eq!(dep["spec"]["replicas"], 1);
    let pod = &dep["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["cello.dev/config-hash"],
        d.config_hash.as_str()
    );
    // A ServiceMonitor exists, so no scrape annotations: never both.
    assert!(pod["metadata"]["annotations"].get("prometheus.io/scrape").is_none());
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["cello"]));
    // The listener is explicit: `cello run` would otherwise bind 127.0.0.1:8000.
    assert_eq!(
        c["args"],
        json!([
            "run",
            "shop.main:app",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
            "--workers",
            "1"
        ])
    );
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health/live");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health/ready");
    assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
    // Drain budget = grace (30) - preStop (5) - 1.
    assert!(c["env"]
        .as_array()
        .expect("env")
        .contains(&json!({"name": "CELLO_SHUTDOWN_TIMEOUT", "value": "24"})));
    for obj in d.children.iter().map(|c| &c.object) {
        let owner = &obj["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], common::UID);
        assert_eq!(owner["controller"], true);
        // Foreground deletion of the CellApp waits for the children only with this.
        assert_eq!(owner["blockOwnerDeletion"], true);
        assert_eq!(owner["kind"], "CellApp");
        assert_eq!(
            obj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "cello-operator"
        );
        assert_eq!(obj["metadata"]["labels"]["app.kubernetes.io/part-of"], "cello");
    }
    let cm = child(&d, Kind::ConfigMap, "shop-config");
    let yaml = cm["data"]["cello.yaml"].as_str().expect("cello.yaml");
    let parsed = cello_config::ServerConfig::from_yaml(yaml).expect("the data plane parses the rendered config");
    assert_eq!(parsed.port, 8000);
    assert_eq!(parsed.host, "0.0.0.0");
}

#[test]
fn replicas_left_out_exactly_when_autoscaling() {
    let hpa = plan(json!({"autoscaling": {"mode": "hpa"}}), Capabilities::all());
    assert!(child(&hpa, Kind::Deployment, "shop")["spec"].get("replicas").is_none());
    let keda = plan(
        json!({"autoscaling": {"mode": "keda"}, "queues": [{"name": "q", "kind": "redis", "listName": "q", "address": "r:6379"}]}),
        Capabilities::all(),
    );
    assert!(child(&keda, Kind::Deployment, "shop")["spec"].get("replicas").is_none());
    // KEDA requested but not installed: nothing scales, so the Deployment keeps a count.
    let no_keda = plan(
        json!({"autoscaling": {"mode": "keda", "minReplicas": 2}, "queues": [{"name": "q", "kind": "redis", "listName": "q", "address": "r:6379"}]}),
        Capabilities::default(),
    );
    assert_eq!(child(&no_keda, Kind::Deployment, "shop")["spec"]["replicas"], 2);
    assert_eq!(no_keda.skipped.len(), 1);
    assert_eq!(no_keda.skipped[0].kind, Kind::ScaledObject);
}

#[test]
fn config_hash_follows_config_and_referenced_data() {
    let app =
        common::app(json!({"envVars": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}]}));
    assert_eq!(cello_operator::resources::referenced_names(&app), ["secret/db"]);
    let caps = Capabilities::all();
    let a = desired(&app, &caps, &BTreeMap::from([("secret/db".into(), "v1".into())])).expect("a");
    let b = desired(&app, &caps, &BTreeMap::from([("secret/db".into(), "v2".into())])).expect("b");
    assert_ne!(a.config_hash, b.config_hash, "a Secret change must roll the pods");
    let other = common::app(json!({"server": {"limits": {"maxBodySize": 5}}}));
    assert_ne!(
        desired(&other, &caps, &ReferencedData::new()).expect("c").config_hash,
        plan(json!({}), caps).config_hash
    );
    // With restartOnConfigChange off, Secret changes do not roll the pods.
    let off = common::app(json!({"rollout": {"restartOnConfigChange": false},
        "envVars": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}]}));
    let a = desired(&off, &caps, &BTreeMap::from([("secret/db".into(), "v1".into())])).expect("a");
    let b = desired(&off, &caps, &BTreeMap::from([("secret/db".into(), "v2".into())])).expect("b");
    assert_eq!(a.config_hash, b.config_hash);
}

#[test]
fn invalid_server_config_is_reported_not_rendered() {
    let app = common::app(json!({"server": {"timeouts": {"idle": 0.0}}}));
    let err = desired(&app, &Capabilities::all(), &ReferencedData::new()).expect_err("invalid");
    assert_eq!(err.metric_label(), "invalid_spec");
    assert!(err.to_string().contains("timeouts.idle"), "{err}");
}

#[test]
fn sidecar_routes_the_service_to_the_dataplane() {
    let d = plan(
        json!({"mode": "sidecar", "sidecar": {"appPort": 9000}}),
        Capabilities::all(),
    );
    let pod = &child(&d, Kind::Deployment, "shop")["spec"]["template"]["spec"];
    let names: Vec<&str> = pod["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["cello-dataplane", "app"]);
    let dp = &pod["containers"][0];
    assert_eq!(dp["ports"][0]["name"], "http");
    assert_eq!(dp["ports"][0]["containerPort"], 8000);
    assert_eq!(
        dp["args"],
        json!([
            "--config",
            "/etc/cello/cello.yaml",
            "--upstream",
            "http://127.0.0.1:9000"
        ])
    );
    assert!(
        pod["containers"][1].get("ports").is_none(),
        "the app container is reachable on localhost only"
    );
    let svc = child(&d, Kind::Service, "shop");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
}

#[test]
fn env_contract_matches_the_golden_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/operator/env-contract.json");
    let table: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("golden table")).expect("JSON");
    let cases = table["queues"].as_array().expect("queues cases");
    assert!(cases.len() >= 3);
    for case in cases {
        let q: cello_operator::crd::QueueBinding = serde_json::from_value(case["binding"].clone()).expect("binding");
        let app = case["app"].as_str().expect("app");
        let got: Vec<Value> = cello_operator::resources::queues::queue_env(app, &q)
            .into_iter()
            .map(|e| match (e.value, e.value_from.and_then(|v| v.secret_key_ref)) {
                (Some(v), _) => json!({"name": e.name, "value": v}),
                (None, Some(s)) => json!({"name": e.name, "secret": {"name": s.name, "key": s.key}}),
                _ => json!({"name": e.name}),
            })
            .collect();
        assert_eq!(Value::Array(got), case["env"], "binding {}", q.name);
    }
    // The app-level variables of the minimal embedded pod.
    let d = plan(json!({"queues": [cases[0]["binding"].clone()]}), Capabilities::all());
    let env = &child(&d, Kind::Deployment, "shop")["spec"]["template"]["spec"]["containers"][0]["env"];
    let names: Vec<&str> = env
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    let want: Vec<&str> = table["podEnv"]
        .as_array()
        .expect("podEnv")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(names, want);
}

#[test]
fn pre_stop_hook_fits_the_server_version() {
    let sleep = |caps: Capabilities, spec: serde_json::Value| {
        let d = desired(&common::app(spec), &caps, &ReferencedData::new()).expect("desired");
        let dep = child(&d, Kind::Deployment, "shop");
        let cm = child(&d, Kind::ConfigMap, "shop-config");
        (
            dep["spec"]["template"]["spec"]["containers"].clone(),
            cm["data"]["cello.yaml"].clone(),
        )
    };
    let new = Capabilities::all();
    let old = Capabilities {
        sleep_action: false,
        ..new
    };
    let (c, _) = sleep(new, json!({}));
    assert_eq!(c[0]["lifecycle"]["preStop"], json!({"sleep": {"seconds": 5}}));
    // 1.28/1.29 reject `sleep` ("field not declared in schema"): an exec sleep instead.
    let (c, _) = sleep(old, json!({}));
    assert_eq!(
        c[0]["lifecycle"]["preStop"],
        json!({"exec": {"command": ["sleep", "5"]}})
    );
    // Sidecar on an old server: the data plane image has no `sleep`; its drain delay does it.
    let (c, yaml) = sleep(old, json!({"mode": "sidecar"}));
    assert_eq!(c[0]["name"], "cello-dataplane");
    assert!(c[0].get("lifecycle").is_none(), "{}", c[0]);
    let cfg: serde_json::Value = serde_yaml::from_str(yaml.as_str().expect("yaml")).expect("cello.yaml");
    assert_eq!(cfg["health"]["drainDelaySecs"], 5.0);
    let (_, yaml) = sleep(new, json!({"mode": "sidecar"}));
    let cfg: serde_json::Value = serde_yaml::from_str(yaml.as_str().expect("yaml")).expect("cello.yaml");
    assert_eq!(cfg["health"]["drainDelaySecs"], 0.0);
}

#[test]
fn the_rendered_config_serves_what_the_pod_is_probed_and_scraped_on() {
    let cfg = |spec: serde_json::Value| -> Value {
        let d = plan(spec, Capabilities::all());
        let cm = child(&d, Kind::ConfigMap, "shop-config");
        serde_yaml::from_str(cm["data"]["cello.yaml"].as_str().expect("yaml")).expect("cello.yaml")
    };
    let c = cfg(json!({}));
    assert_eq!(c["prometheus"]["enabled"], true, "metrics are on by default");
    assert_eq!(c["prometheus"]["endpoint"], "/metrics");
    assert_eq!(c["health"]["enabled"], true, "default probes need the health endpoints");
    let c = cfg(json!({"metrics": {"path": "/internal/metrics"}}));
    assert_eq!(c["prometheus"]["endpoint"], "/internal/metrics");
    let c = cfg(json!({"metrics": {"enabled": false},
                       "probes": {"liveness": {"disabled": true}, "readiness": {"path": "/ok"}, "startup": {"disabled": true}}}));
    assert_eq!(c["prometheus"]["enabled"], false);
    assert_eq!(c["health"]["enabled"], false, "no probe uses the health endpoints");
    // Probes follow the configured health base path.
    let d = plan(json!({"server": {"health": {"basePath": "/hc"}}}), Capabilities::all());
    let c0 = &child(&d, Kind::Deployment, "shop")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c0["readinessProbe"]["httpGet"]["path"], "/hc/ready");
    // A separate metrics port would be advertised but never served: refused.
    let err = desired(
        &common::app(json!({"metrics": {"port": 9090}})),
        &Capabilities::all(),
        &ReferencedData::new(),
    )
    .expect_err("separate metrics port");
    assert!(err.to_string().contains("metrics.port 9090"), "{err}");
    assert!(desired(
        &common::app(json!({"metrics": {"port": 8000}})),
        &Capabilities::all(),
        &ReferencedData::new()
    )
    .is_ok());
}

/// Issue 10: the edge middleware of `examples/k8s/middleware.yaml` (`spec.server`) reaches
/// the pod's `cello.yaml` unchanged, and the data plane parses and accepts it.
#[test]
fn edge_middleware_example_reaches_the_pods_cello_yaml() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/k8s/middleware.yaml");
    let text = std::fs::read_to_string(&path).expect("read the example");
    let mut app: cello_operator::CellApp = serde_yaml::from_str(&text).expect("the example is a CellApp");
    app.metadata.uid = Some(common::UID.into());
    let d = desired(&app, &Capabilities::all(), &ReferencedData::new()).expect("desired");
    let cm = child(&d, Kind::ConfigMap, "storefront-config");
    let yaml = cm["data"]["cello.yaml"].as_str().expect("cello.yaml");
    let cfg = cello_config::ServerConfig::from_yaml(yaml).expect("the data plane parses the rendered config");
    cfg.validate().expect("and accepts it");
    let cors = cfg.cors.expect("cors");
    assert_eq!(cors.origins, ["https://shop.example.com", "https://*.shop.example.com"]);
    assert!(cors.credentials);
    assert_eq!(cors.max_age, Some(600));
    let comp = cfg.compression.expect("compression");
    assert_eq!((comp.min_size, comp.algorithms.len()), (1024, 3));
    assert_eq!(cfg.request_id.expect("requestId").header_name, "X-Request-ID");
    let sec = cfg.security_headers.expect("securityHeaders");
    assert_eq!(sec.hsts_max_age, Some(31_536_000));
    assert!(sec.csp.expect("csp").has_nonce());
    assert!(cfg.etag.is_some());
    assert_eq!(cfg.static_files.len(), 1);
    assert_eq!(cfg.static_files[0].root, "/app/static");
    let cache = cfg.cache.expect("cache");
    assert_eq!((cache.ttl, cache.max_entries), (60, 5000));
    let breaker = cfg.circuit_breaker.expect("circuitBreaker");
    assert_eq!((breaker.failure_threshold, breaker.half_open_target), (5, 3));
    assert_eq!(cfg.limits.max_body_size, 1_048_576);
    assert!(cfg.access_log);
    let log = cfg.access_log_options.expect("accessLogOptions");
    assert_eq!(log.exclude_paths, ["/health*"]);
}

/// Issue 15: the consumer container runs what `cello consume` serves — its admin port, the
/// fixed health and metrics paths there, and `CELLO_QUEUES` so `--queue` finds the binding —
/// and its pods are scraped like the app's (PodMonitor, else annotations; never both).
#[test]
fn consumer_pods_match_what_cello_consume_serves() {
    let spec = json!({
        "queues": [{"name": "events", "kind": "redis", "streamName": "events", "address": "r:6379"}],
        "consumers": [{"name": "audit", "queue": "events", "handler": "shop.w:audit"}],
    });
    let d = plan(spec.clone(), Capabilities::all());
    let pod = child(&d, Kind::Deployment, "shop-audit")["spec"]["template"].clone();
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["cello"]));
    assert_eq!(
        c["args"],
        json!([
            "consume",
            "shop.w:audit",
            "--queue",
            "events",
            "--admin-port",
            "8081",
            "--host",
            "0.0.0.0"
        ])
    );
    assert_eq!(c["ports"], json!([{"name": "admin", "containerPort": 8081}]));
    for (probe, path) in [
        ("startupProbe", "/health/live"),
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ] {
        assert_eq!(c[probe]["httpGet"], json!({"path": path, "port": "admin"}), "{probe}");
    }
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("name"), &e["value"]))
        .collect();
    assert_eq!(env["CELLO_QUEUES"], "events");
    assert_eq!(env["CELLO_QUEUE_EVENTS_STREAM"], "events");
    assert_eq!(env["CELLO_QUEUE_EVENTS_GROUP"], "shop-events");

    // The app's ServiceMonitor cannot reach consumer pods (no Service): a PodMonitor of their own.
    let pm = child(&d, Kind::PodMonitor, "shop-consumers");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/instance": "shop", "app.kubernetes.io/component": "consumer"})
    );
    assert_eq!(
        pm["spec"]["podMetricsEndpoints"],
        json!([{"port": "admin", "path": "/metrics", "interval": "30s"}])
    );
    assert!(pod["metadata"]["annotations"].get("prometheus.io/scrape").is_none());
    // No PodMonitor CRD, or no monitor object at all: scrape annotations on the consumer pods.
    for caps in [Capabilities::all().without(Kind::PodMonitor), Capabilities::default()] {
        let d = plan(spec.clone(), caps);
        assert_eq!(d.names(Kind::PodMonitor).count(), 0);
        let ann = &child(&d, Kind::Deployment, "shop-audit")["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true");
        assert_eq!(ann["prometheus.io/port"], "8081");
        assert_eq!(ann["prometheus.io/path"], "/metrics");
    }
    // Metrics off: neither.
    let mut off = spec;
    off["metrics"] = json!({"enabled": false});
    let d = plan(off, Capabilities::all());
    assert_eq!(d.names(Kind::PodMonitor).count(), 0);
    let ann = &child(&d, Kind::Deployment, "shop-audit")["spec"]["template"]["metadata"]["annotations"];
    assert!(ann.get("prometheus.io/scrape").is_none());
}

/// Issue 15: KEDA triggers of the new queue kinds.
#[test]
fn keda_triggers_for_redis_streams_and_sqs() {
    let d = plan(
        json!({"autoscaling": {"mode": "keda", "maxReplicas": 4},
               "queues": [{"name": "events", "kind": "redis", "streamName": "events", "address": "r:6379", "target": 7},
                          {"name": "inv", "kind": "sqs", "queueUrl": "http://ls:4566/000000000000/inv", "region": "eu-west-1",
                           "endpoint": "http://ls:4566",
                           "accessKeyIdSecret": {"name": "aws", "key": "id"},
                           "secretAccessKeySecret": {"name": "aws", "key": "secret"}},
                          {"name": "ref", "kind": "sqs", "queueUrl": "https://sqs.us-east-1.amazonaws.com/1/ref", "region": "us-east-1"}],
               "consumers": [{"name": "audit", "queue": "events", "handler": "a:b"},
                             {"name": "bill", "queue": "inv", "handler": "a:c"},
                             {"name": "refund", "queue": "ref", "handler": "a:d"}]}),
        Capabilities::all(),
    );
    let trigger = |name: &str| child(&d, Kind::ScaledObject, name)["spec"]["triggers"][0].clone();
    let t = trigger("shop-audit");
    assert_eq!(t["type"], "redis-streams");
    assert_eq!(
        t["metadata"],
        json!({"address": "r:6379", "stream": "events", "consumerGroup": "shop-events", "lagCount": "7"})
    );
    let t = trigger("shop-bill");
    assert_eq!(t["type"], "aws-sqs-queue");
    assert_eq!(
        t["metadata"],
        json!({"queueURL": "http://ls:4566/000000000000/inv", "awsRegion": "eu-west-1", "queueLength": "10",
               "awsEndpoint": "http://ls:4566"})
    );
    let auth = child(
        &d,
        Kind::TriggerAuthentication,
        t["authenticationRef"]["name"].as_str().expect("auth"),
    );
    assert_eq!(
        auth["spec"],
        json!({"secretTargetRef": [{"parameter": "awsAccessKeyID", "name": "aws", "key": "id"},
                                   {"parameter": "awsSecretAccessKey", "name": "aws", "key": "secret"}]})
    );
    // No key Secrets: KEDA uses the workload's AWS identity, as the app does.
    let t = trigger("shop-refund");
    assert!(t["metadata"].get("awsEndpoint").is_none());
    let auth = child(
        &d,
        Kind::TriggerAuthentication,
        t["authenticationRef"]["name"].as_str().expect("auth"),
    );
    assert_eq!(
        auth["spec"],
        json!({"podIdentity": {"provider": "aws", "identityOwner": "workload"}})
    );
}
