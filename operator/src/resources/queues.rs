//! The environment-variable contract between the operator and the app (queue bindings).
//!
//! For a binding named `orders` the app sees `CELLO_QUEUE_ORDERS_*` (upper case, `-` → `_`);
//! `CELLO_QUEUES` lists the binding names. The golden table `tests/operator/env-contract.json`
//! pins the exact names and is read by both the Rust and the Python tests.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};

use crate::crd::{QueueBinding, QueueKind, SecretKeyRef};

/// `CELLO_QUEUE_<NAME>` for a binding name.
pub fn env_prefix(binding: &str) -> String {
    format!("CELLO_QUEUE_{}", binding.to_ascii_uppercase().replace('-', "_"))
}

/// The broker kind as written in env vars and KEDA trigger types.
pub fn kind_str(kind: QueueKind) -> &'static str {
    match kind {
        QueueKind::Kafka => "kafka",
        QueueKind::Rabbitmq => "rabbitmq",
        QueueKind::Redis => "redis",
        QueueKind::Sqs => "sqs",
    }
}

/// The consumer group of a Kafka or Redis-stream binding (`<app>-<binding>` unless set).
pub fn consumer_group(app: &str, q: &QueueBinding) -> String {
    q.consumer_group.clone().unwrap_or_else(|| format!("{app}-{}", q.name))
}

fn plain(name: String, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name,
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret(name: String, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name,
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Env vars for one queue binding of app `app`.
pub fn queue_env(app: &str, q: &QueueBinding) -> Vec<EnvVar> {
    let p = env_prefix(&q.name);
    let mut env = vec![plain(format!("{p}_KIND"), kind_str(q.kind))];
    let opt = |env: &mut Vec<EnvVar>, suffix: &str, v: &Option<String>| {
        if let Some(v) = v {
            env.push(plain(format!("{p}_{suffix}"), v.clone()));
        }
    };
    match q.kind {
        QueueKind::Kafka => {
            opt(&mut env, "BOOTSTRAP_SERVERS", &q.bootstrap_servers);
            opt(&mut env, "TOPIC", &q.topic);
            env.push(plain(format!("{p}_GROUP"), consumer_group(app, q)));
        }
        QueueKind::Rabbitmq => {
            if let Some(s) = &q.host_secret {
                env.push(secret(format!("{p}_URL"), s));
            }
            opt(&mut env, "QUEUE", &q.queue_name);
        }
        QueueKind::Redis => {
            opt(&mut env, "ADDRESS", &q.address);
            opt(&mut env, "LIST", &q.list_name);
            if q.stream_name.is_some() {
                opt(&mut env, "STREAM", &q.stream_name);
                env.push(plain(format!("{p}_GROUP"), consumer_group(app, q)));
            }
        }
        QueueKind::Sqs => {
            opt(&mut env, "QUEUE_URL", &q.queue_url);
            opt(&mut env, "REGION", &q.region);
            opt(&mut env, "ENDPOINT", &q.endpoint);
            if let Some(s) = &q.access_key_id_secret {
                env.push(secret(format!("{p}_ACCESS_KEY_ID"), s));
            }
            if let Some(s) = &q.secret_access_key_secret {
                env.push(secret(format!("{p}_SECRET_ACCESS_KEY"), s));
            }
        }
    }
    if let Some(s) = &q.password_secret {
        env.push(secret(format!("{p}_PASSWORD"), s));
    }
    env
}

/// Env vars for all bindings, plus `CELLO_QUEUES` (comma-separated names) when any exist.
pub fn all_queue_env(app: &str, queues: &[QueueBinding]) -> Vec<EnvVar> {
    if queues.is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    let mut env = vec![plain("CELLO_QUEUES".into(), names.join(","))];
    for q in queues {
        env.extend(queue_env(app, q));
    }
    env
}
