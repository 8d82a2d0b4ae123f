//! HorizontalPodAutoscaler, KEDA ScaledObject + TriggerAuthentication, PodDisruptionBudget.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::queues::{consumer_group, kind_str};
use super::workload::app_replicas;
use super::{to_value, Child, Ctx, Kind, Skipped};
use crate::crd::{AutoscalingMode, AutoscalingSpec, QueueBinding, QueueKind};
use crate::Result;

const DEFAULT_CPU_TARGET: i32 = 80;

pub(crate) fn autoscalers(ctx: &Ctx, children: &mut Vec<Child>, skipped: &mut Vec<Skipped>) -> Result<()> {
    let Some(spec) = ctx.app.spec.autoscaling.as_ref() else {
        return Ok(());
    };
    match ctx.app.autoscaling_mode() {
        AutoscalingMode::None => {}
        AutoscalingMode::Hpa => {
            let hpa = HorizontalPodAutoscaler {
                metadata: ctx.meta(ctx.app_name(), "app"),
                spec: HorizontalPodAutoscalerSpec {
                    scale_target_ref: CrossVersionObjectReference {
                        api_version: Some("apps/v1".into()),
                        kind: "Deployment".into(),
                        name: ctx.app_name(),
                    },
                    min_replicas: Some(spec.min_replicas.max(1)),
                    max_replicas: spec.max_replicas,
                    metrics: Some(vec![MetricSpec {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricSource {
                            name: "cpu".into(),
                            target: MetricTarget {
                                type_: "Utilization".into(),
                                average_utilization: Some(spec.target_cpu_utilization.unwrap_or(DEFAULT_CPU_TARGET)),
                                ..MetricTarget::default()
                            },
                        }),
                        ..MetricSpec::default()
                    }]),
                    behavior: None,
                },
                status: None,
            };
            children.push(Child {
                kind: Kind::HorizontalPodAutoscaler,
                name: ctx.app_name(),
                object: to_value("HorizontalPodAutoscaler", &hpa)?,
            });
        }
        AutoscalingMode::Keda if !ctx.caps.keda => {
            skipped.push(Skipped {
                kind: Kind::ScaledObject,
                because: "autoscaling.mode is keda".into(),
            });
        }
        AutoscalingMode::Keda => keda(ctx, children),
    }
    Ok(())
}

/// A TriggerAuthentication per queue that has credentials; its name, if any.
fn trigger_auth(ctx: &Ctx, q: &QueueBinding, children: &mut Vec<Child>) -> Option<String> {
    let params: Vec<Value> = match q.kind {
        QueueKind::Rabbitmq => q
            .host_secret
            .iter()
            .map(|s| secret_target("host", &s.name, &s.key))
            .collect(),
        QueueKind::Redis => q
            .password_secret
            .iter()
            .map(|s| secret_target("password", &s.name, &s.key))
            .collect(),
        // Kafka SASL needs mode, user and password together; plain brokers need none.
        QueueKind::Kafka => Vec::new(),
        QueueKind::Sqs => [
            ("awsAccessKeyID", &q.access_key_id_secret),
            ("awsSecretAccessKey", &q.secret_access_key_secret),
        ]
        .into_iter()
        .filter_map(|(p, s)| s.as_ref().map(|s| secret_target(p, &s.name, &s.key)))
        .collect(),
    };
    // SQS without keys: KEDA uses the pod identity (IRSA / EKS Pod Identity) of the app's
    // service account, as the app does; a trigger without any authentication would fail.
    let pod_identity = q.kind == QueueKind::Sqs && params.is_empty();
    if params.is_empty() && !pod_identity {
        return None;
    }
    let name = ctx.child_name(&format!("queue-{}", q.name));
    if !children
        .iter()
        .any(|c| c.kind == Kind::TriggerAuthentication && c.name == name)
    {
        let spec = if pod_identity {
            json!({"podIdentity": {"provider": "aws", "identityOwner": "workload"}})
        } else {
            json!({"secretTargetRef": params})
        };
        let object = json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": ctx.meta(name.clone(), "autoscaler"),
            "spec": spec,
        });
        children.push(Child {
            kind: Kind::TriggerAuthentication,
            name: name.clone(),
            object,
        });
    }
    Some(name)
}

fn secret_target(parameter: &str, name: &str, key: &str) -> Value {
    json!({"parameter": parameter, "name": name, "key": key})
}

fn queue_trigger(ctx: &Ctx, q: &QueueBinding, children: &mut Vec<Child>) -> Value {
    let target = q.target.to_string();
    let metadata = match q.kind {
        QueueKind::Kafka => json!({
            "bootstrapServers": q.bootstrap_servers,
            "consumerGroup": consumer_group(&ctx.name, q),
            "topic": q.topic,
            "lagThreshold": target,
        }),
        QueueKind::Rabbitmq => {
            json!({"protocol": "amqp", "queueName": q.queue_name, "mode": "QueueLength", "value": target})
        }
        QueueKind::Redis if q.stream_name.is_some() => json!({
            "address": q.address,
            "stream": q.stream_name,
            "consumerGroup": consumer_group(&ctx.name, q),
            // Entries not yet delivered to the group (Redis 7+): what lets KEDA scale from
            // zero; `pendingEntriesCount` only sees entries already read and not acknowledged.
            "lagCount": target,
        }),
        QueueKind::Redis => json!({"address": q.address, "listName": q.list_name, "listLength": target}),
        QueueKind::Sqs => {
            let mut m = json!({
                "queueURL": q.queue_url,
                "awsRegion": q.region,
                "queueLength": target,
            });
            if let Some(e) = &q.endpoint {
                m["awsEndpoint"] = json!(e);
            }
            m
        }
    };
    let trigger_type = match q.kind {
        QueueKind::Redis if q.stream_name.is_some() => "redis-streams",
        QueueKind::Sqs => "aws-sqs-queue",
        kind => kind_str(kind),
    };
    let mut trigger = json!({"type": trigger_type, "name": q.name, "metadata": metadata});
    if let Some(auth) = trigger_auth(ctx, q, children) {
        trigger["authenticationRef"] = json!({"name": auth});
    }
    trigger
}

fn scaled_object(ctx: &Ctx, auto: &AutoscalingSpec, name: String, triggers: Vec<Value>, min: i32) -> Child {
    let mut spec = json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicaCount": min,
        "maxReplicaCount": auto.max_replicas,
        "triggers": triggers,
    });
    if let Some(p) = auto.polling_interval {
        spec["pollingInterval"] = json!(p);
    }
    if let Some(c) = auto.cooldown_period {
        spec["cooldownPeriod"] = json!(c);
    }
    let object = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": ctx.meta(name.clone(), "autoscaler"),
        "spec": spec,
    });
    Child {
        kind: Kind::ScaledObject,
        name,
        object,
    }
}

/// One ScaledObject for the app (queues no consumer takes, plus CPU) and one per consumer
/// (its queue's lag), so each Deployment scales on its own work.
fn keda(ctx: &Ctx, children: &mut Vec<Child>) {
    let spec = &ctx.app.spec;
    let Some(auto) = spec.autoscaling.as_ref() else { return };
    let mut triggers: Vec<Value> = spec
        .queues
        .iter()
        .filter(|q| !spec.consumers.iter().any(|c| c.queue == q.name))
        .map(|q| queue_trigger(ctx, q, children))
        .collect();
    if auto.target_cpu_utilization.is_some() || triggers.is_empty() {
        let value = auto.target_cpu_utilization.unwrap_or(DEFAULT_CPU_TARGET).to_string();
        triggers.push(json!({"type": "cpu", "metricType": "Utilization", "metadata": {"value": value}}));
    }
    // A CPU trigger cannot scale from zero, so the app keeps at least one replica.
    let app_min = auto.min_replicas.max(1);
    let so = scaled_object(ctx, auto, ctx.app_name(), triggers, app_min);
    children.push(so);
    for c in &spec.consumers {
        let Some(q) = spec.queues.iter().find(|q| q.name == c.queue) else {
            continue;
        };
        let trigger = queue_trigger(ctx, q, children);
        let name = ctx.child_name(&c.name);
        let so = scaled_object(ctx, auto, name, vec![trigger], auto.min_replicas);
        children.push(so);
    }
}

pub(crate) fn pdb(ctx: &Ctx) -> Result<Option<Value>> {
    let spec = &ctx.app.spec;
    let replicas = if ctx.app.stopped() {
        0
    } else {
        app_replicas(ctx).unwrap_or_else(|| spec.autoscaling.as_ref().map_or(1, |a| a.min_replicas))
    };
    if replicas <= 1 && spec.disruption.is_none() {
        return Ok(None);
    }
    let d = spec.disruption.clone();
    let min_available = d.as_ref().and_then(|d| d.min_available.clone());
    let max_unavailable = d
        .and_then(|d| d.max_unavailable)
        .or_else(|| min_available.is_none().then_some(IntOrString::Int(1)));
    let pdb = PodDisruptionBudget {
        metadata: ctx.meta(ctx.app_name(), "app"),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(ctx.selector("app")),
                match_expressions: None,
            }),
            min_available,
            max_unavailable,
            unhealthy_pod_eviction_policy: None,
        }),
        status: None,
    };
    to_value("PodDisruptionBudget", &pdb).map(Some)
}
