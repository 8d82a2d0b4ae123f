//! Shared fixtures: the matrix of CellApps of OPERATOR.md, used by the snapshot, property
//! and mock-API-server tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use cello_operator::crd::CellApp;
use cello_operator::resources::Capabilities;
use serde_json::{json, Value};

pub const UID: &str = "5f0c6b8e-2a44-4c1e-9d3f-0d9b2c7e1a10";

/// A CellApp named `shop` in namespace `prod` with `spec` merged over the two required fields.
pub fn app(spec: Value) -> CellApp {
    app_named("shop", spec)
}

pub fn app_named(name: &str, spec: Value) -> CellApp {
    let mut full = json!({"image": "ghcr.io/acme/shop:1.4.2", "app": "shop.main:app"});
    merge(&mut full, spec);
    let obj = json!({
        "apiVersion": "cello.dev/v1alpha1",
        "kind": "CellApp",
        "metadata": {"name": name, "namespace": "prod", "uid": UID, "generation": 3, "resourceVersion": "100"},
        "spec": full,
    });
    serde_json::from_value(obj).expect("fixture deserializes")
}

pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn kafka() -> Value {
    json!({"name": "orders", "kind": "kafka", "topic": "orders", "bootstrapServers": "kafka:9092", "target": 50})
}
fn rabbitmq() -> Value {
    json!({"name": "jobs", "kind": "rabbitmq", "queueName": "jobs", "hostSecret": {"name": "rabbit", "key": "url"}})
}
fn redis() -> Value {
    json!({"name": "tasks", "kind": "redis", "listName": "tasks", "address": "redis:6379",
           "passwordSecret": {"name": "redis", "key": "password"}})
}

fn redis_stream() -> Value {
    json!({"name": "events", "kind": "redis", "streamName": "events", "address": "redis:6379", "target": 20})
}
fn sqs() -> Value {
    json!({"name": "invoices", "kind": "sqs", "queueUrl": "http://localstack:4566/000000000000/invoices",
           "region": "eu-west-1", "endpoint": "http://localstack:4566",
           "accessKeyIdSecret": {"name": "aws", "key": "access-key-id"},
           "secretAccessKeySecret": {"name": "aws", "key": "secret-access-key"}})
}
fn sqs_pod_identity() -> Value {
    json!({"name": "refunds", "kind": "sqs", "queueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/refunds",
           "region": "us-east-1", "target": 5})
}

/// (fixture name, spec fragment, capabilities).
pub fn matrix() -> Vec<(&'static str, Value, Capabilities)> {
    let all = Capabilities::all();
    let none = Capabilities::default();
    // Kubernetes 1.28/1.29: no preStop.sleep; everything else installed.
    let old = Capabilities {
        sleep_action: false,
        ..all
    };
    vec![
        ("minimal", json!({}), all),
        (
            "full",
            json!({
                "imagePullPolicy": "IfNotPresent",
                "imagePullSecrets": [{"name": "registry"}],
                "env": "production",
                "args": ["--access-log"],
                "workers": 4,
                "port": 8080,
                "replicas": 3,
                "server": {"limits": {"maxBodySize": 1048576}, "timeouts": {"handler": 10.0},
                           "trustedProxies": ["10.0.0.0/8"]},
                "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                "envVars": [{"name": "FEATURE_X", "value": "on"},
                            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                "envFrom": [{"configMapRef": {"name": "shop-settings"}}],
                "probes": {"liveness": {"path": "/livez", "periodSeconds": 5}, "startup": {"disabled": true}},
                "service": {"type": "LoadBalancer", "port": 443, "annotations": {"lb.example/internal": "true"}},
                "ingress": {"host": "shop.example.com", "path": "/api", "className": "nginx",
                            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"}},
                "tls": {"secretName": "shop-cert"},
                "metrics": {"path": "/internal/metrics", "interval": "15s", "monitor": "serviceMonitor", "labels": {"release": "prom"}},
                "rollout": {"maxSurge": "25%", "maxUnavailable": 0, "terminationGracePeriodSeconds": 60},
                "disruption": {"minAvailable": 2},
                "podTemplate": {
                    "labels": {"team": "checkout"},
                    "annotations": {"example.com/owner": "checkout"},
                    "serviceAccountName": "shop",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "shop"}}}],
                    "priorityClassName": "web"
                }
            }),
            all,
        ),
        (
            "hpa",
            json!({"autoscaling": {"mode": "hpa", "minReplicas": 2, "maxReplicas": 8, "targetCpuUtilization": 60}}),
            all,
        ),
        (
            "keda-kafka",
            json!({"autoscaling": {"mode": "keda", "maxReplicas": 20, "pollingInterval": 15}, "queues": [kafka()]}),
            all,
        ),
        (
            "keda-rabbitmq",
            json!({"autoscaling": {"mode": "keda", "maxReplicas": 5}, "queues": [rabbitmq()]}),
            all,
        ),
        (
            "keda-redis",
            json!({"autoscaling": {"mode": "keda", "maxReplicas": 5, "targetCpuUtilization": 75}, "queues": [redis()]}),
            all,
        ),
        (
            "keda-redis-streams",
            json!({"autoscaling": {"mode": "keda", "minReplicas": 0, "maxReplicas": 10}, "queues": [redis_stream()],
                   "consumers": [{"name": "audit", "queue": "events", "handler": "shop.workers:audit"}]}),
            all,
        ),
        (
            "keda-sqs",
            json!({"autoscaling": {"mode": "keda", "minReplicas": 0, "maxReplicas": 10},
                   "queues": [sqs(), sqs_pod_identity()],
                   "consumers": [{"name": "billing", "queue": "invoices", "handler": "shop.workers:bill"},
                                 {"name": "refunds", "queue": "refunds", "handler": "shop.workers:refund"}]}),
            all,
        ),
        (
            "keda-consumers",
            json!({"autoscaling": {"mode": "keda", "minReplicas": 0, "maxReplicas": 30}, "queues": [kafka(), rabbitmq()],
                   "consumers": [{"name": "fulfil", "queue": "orders", "handler": "shop.workers:fulfil"}]}),
            all,
        ),
        (
            "consumers",
            json!({"queues": [kafka(), redis(), redis_stream(), rabbitmq()],
                   "consumers": [{"name": "fulfil", "queue": "orders", "handler": "shop.workers:fulfil", "replicas": 2},
                                 {"name": "mailer", "queue": "tasks", "handler": "shop.workers:mail",
                                  "resources": {"requests": {"cpu": "100m"}}},
                                 {"name": "audit", "queue": "events", "handler": "shop.workers:audit"},
                                 {"name": "jobber", "queue": "jobs", "handler": "shop.workers:job"}]}),
            all,
        ),
        (
            // Consumer pods scraped through annotations (no monitor object).
            "consumers-annotations",
            json!({"metrics": {"monitor": "none"}, "queues": [redis(), rabbitmq()],
                   "consumers": [{"name": "mailer", "queue": "tasks", "handler": "shop.workers:mail"},
                                 {"name": "jobber", "queue": "jobs", "handler": "shop.workers:job"}]}),
            all,
        ),
        (
            "tls-secret-ingress",
            json!({"ingress": {"host": "shop.example.com"}, "tls": {"secretName": "shop-cert"}}),
            all,
        ),
        (
            "tls-issuer-ingress",
            json!({"ingress": {"host": "shop.example.com"},
                   "tls": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}}}),
            all,
        ),
        (
            "tls-issuer-pod",
            json!({"tls": {"issuerRef": {"name": "internal-ca"}, "termination": "pod"}}),
            all,
        ),
        (
            "tls-secret-pod",
            json!({"tls": {"secretName": "shop-cert", "termination": "pod"}}),
            all,
        ),
        ("metrics-off", json!({"metrics": {"enabled": false}}), all),
        (
            "metrics-podmonitor",
            json!({"metrics": {"monitor": "podMonitor", "path": "/internal/metrics"}}),
            all,
        ),
        (
            "metrics-annotations",
            json!({"metrics": {"monitor": "none", "path": "/prom"}}),
            all,
        ),
        (
            "optional-crds-absent",
            json!({"autoscaling": {"mode": "keda", "minReplicas": 2, "maxReplicas": 6}, "queues": [kafka()],
                   "ingress": {"host": "shop.example.com"},
                   "tls": {"issuerRef": {"name": "letsencrypt"}}, "metrics": {"monitor": "serviceMonitor"}}),
            none,
        ),
        ("auto-monitor-without-crds", json!({}), none),
        ("paused", json!({"operation": {"paused": true}}), all),
        (
            "stopped",
            json!({"operation": {"stopped": true}, "autoscaling": {"mode": "hpa", "minReplicas": 2, "maxReplicas": 4},
                   "queues": [kafka()], "consumers": [{"name": "fulfil", "queue": "orders", "handler": "shop.w:run"}]}),
            all,
        ),
        (
            "sidecar",
            json!({"mode": "sidecar", "sidecar": {"appPort": 8080, "command": ["gunicorn", "-b", "127.0.0.1:8080", "legacy:app"],
                   "resources": {"requests": {"cpu": "50m"}}}, "args": ["--log-level", "info"]}),
            all,
        ),
        ("kube-1-28", json!({}), old),
        (
            "sidecar-kube-1-29",
            json!({"mode": "sidecar", "sidecar": {"appPort": 8080}}),
            old,
        ),
        (
            "development",
            json!({"env": "development", "replicas": 2, "disruption": {"maxUnavailable": "50%"}}),
            all,
        ),
    ]
}
