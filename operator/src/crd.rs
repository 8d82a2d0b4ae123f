//! The `CellApp` custom resource (`cello.dev/v1alpha1`).
//!
//! Rules for this file, because the CRD YAML in `crds/` is generated from it:
//! - every optional field has `#[serde(default)]` at field level (never container level: the
//!   `KubeSchema` derive re-derives single-field structs and a container default would need
//!   `Default` on them);
//! - lists keyed by `name` are list-maps so server-side apply merges them per item;
//! - every list and every string a CEL rule touches has a `maxItems`/`maxLength`, so the API
//!   server's CEL cost estimate stays inside its budget;
//! - no `messageExpression`, `optionalOldSelf` or `selectableFields` (older API servers reject them).

use std::collections::BTreeMap;

use cello_config::ServerConfig;
use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext, ResourceRequirements, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the CellApp resource.
pub const GROUP: &str = "cello.dev";
/// API version of the CellApp resource.
pub const VERSION: &str = "v1alpha1";

/// Desired state of a Cello application.
// clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[expect(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cello.dev",
    version = "v1alpha1",
    kind = "CellApp",
    plural = "cellapps",
    shortname = "cell",
    category = "cello",
    namespaced,
    status = "CellAppStatus",
    derive = "PartialEq",
    cel,
    doc = "A Cello application: Deployment, Service, config, autoscaling, metrics, TLS and queue workers.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "string", json_path = ".status.replicaSummary"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.replicas) || !has(self.autoscaling) || self.autoscaling.mode == 'none'")
        .message("replicas must not be set when autoscaling is enabled").field_path(".replicas"),
    validation = Rule::new("!has(self.autoscaling) || self.autoscaling.mode != 'keda' || (has(self.queues) && size(self.queues) > 0)")
        .message("autoscaling.mode keda needs at least one entry in queues").field_path(".autoscaling"),
    validation = Rule::new("!has(self.consumers) || self.consumers.all(c, has(self.queues) && self.queues.exists(q, q.name == c.queue))")
        .message("every consumers[].queue must name an entry of queues").field_path(".consumers"),
    validation = Rule::new("!has(self.tls) || self.tls.termination != 'ingress' || has(self.ingress)")
        .message("tls.termination ingress needs spec.ingress").field_path(".tls"),
    validation = Rule::new("!has(self.sidecar) || self.mode == 'sidecar'")
        .message("spec.sidecar is only used with mode sidecar").field_path(".sidecar"),
    validation = Rule::new("self.mode != 'sidecar' || !has(self.sidecar) || self.sidecar.appPort != self.port")
        .message("sidecar.appPort must differ from port (the data plane listens on port)").field_path(".sidecar.appPort"),
)]
pub struct CellAppSpec {
    /// Container image of the application.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Image pull policy of the application containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets used to pull the images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// The application as `module:attribute`, e.g. `myapp.main:app`.
    #[schemars(length(min = 3, max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$')")
        .message("app must look like module:attribute"))]
    pub app: String,
    /// Runtime environment; `development` turns on debug responses.
    #[serde(default)]
    pub env: AppEnv,
    /// Extra arguments for `cello run` (embedded) or the app container (sidecar).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub args: Vec<String>,
    /// Worker processes per pod (`cello run --workers`).
    #[serde(default = "default_workers")]
    #[schemars(range(min = 1, max = 256))]
    pub workers: i32,
    /// Port the pod serves HTTP on (the data plane's port in both modes).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Fixed replica count; leave unset when autoscaling (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// `embedded` runs the Python app inside Cello; `sidecar` fronts another HTTP container.
    #[serde(default)]
    pub mode: Mode,
    /// Sidecar-mode settings (only with `mode: sidecar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarSpec>,
    /// Data-plane configuration (the same types as the Python API), rendered to `cello.yaml`.
    #[serde(default)]
    pub server: ServerConfig,
    /// Resources of the application container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables of the application container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env_vars: Vec<EnvVar>,
    /// Sources of environment variables (ConfigMaps, Secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub env_from: Vec<EnvFromSource>,
    /// Health probes; default to the data plane's `/health/*` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbesSpec>,
    /// The Service in front of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// An Ingress for the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// TLS: an existing Secret or a cert-manager issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Prometheus scraping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSpec>,
    /// Horizontal scaling by CPU (HPA) or queue lag (KEDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Queue bindings: environment variables for the app and KEDA triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub queues: Vec<QueueBinding>,
    /// Worker Deployments that consume queues.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub consumers: Vec<ConsumerSpec>,
    /// Rollout strategy and restart behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// PodDisruptionBudget settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<DisruptionSpec>,
    /// Pod template overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateSpec>,
    /// Pause reconciliation or stop the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationSpec>,
}

fn default_workers() -> i32 {
    1
}
fn default_port() -> i32 {
    8000
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when missing.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// Runtime environment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    /// Debug responses, reload-friendly defaults.
    Development,
    /// Production defaults.
    #[default]
    Production,
}

/// How the data plane runs in the pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `cello run <app>` in the app image.
    #[default]
    Embedded,
    /// A `cello-dataplane` container proxies to the app container on localhost.
    Sidecar,
}

/// Sidecar-mode settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Image of the `cello-dataplane` container (default: the operator's configured data-plane image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Port the app container listens on (localhost).
    #[serde(default = "default_app_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub app_port: i32,
    /// Command of the app container (default: the image's entrypoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Resources of the data-plane container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_app_port() -> i32 {
    8080
}

/// Health probes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbesSpec {
    /// Liveness probe (default `/health/live`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<ProbeSpec>,
    /// Readiness probe (default `/health/ready`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ProbeSpec>,
    /// Startup probe (default `/health/startup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<ProbeSpec>,
}

/// One HTTP probe.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Turn the probe off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// HTTP path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("probe path must start with /"))]
    pub path: Option<String>,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub period_seconds: Option<i32>,
    /// Seconds before a probe times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i32>,
    /// Failures before the probe counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<i32>,
    /// Seconds after start before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_delay_seconds: Option<i32>,
}

/// The Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Service port (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Extra Service annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Cluster-internal.
    #[default]
    ClusterIP,
    /// Node port.
    NodePort,
    /// Cloud load balancer.
    LoadBalancer,
}

/// An Ingress rule for the app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Path prefix.
    #[serde(default = "default_ingress_path")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("ingress path must start with /"))]
    pub path: String,
    /// IngressClass name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Extra Ingress annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_ingress_path() -> String {
    "/".into()
}

/// TLS for the app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.issuerRef)")
    .message("set exactly one of tls.secretName and tls.issuerRef"))]
pub struct TlsSpec {
    /// An existing `kubernetes.io/tls` Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// A cert-manager issuer; the operator creates a Certificate into Secret `<app>-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// Where TLS ends: at the Ingress or in the pod (the data plane serves HTTPS).
    #[serde(default)]
    pub termination: TlsTermination,
}

/// A cert-manager issuer reference.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Issuer name.
    pub name: String,
    /// `Issuer` or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// Issuer API group.
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

/// cert-manager issuer kind.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IssuerKind {
    /// Namespaced issuer.
    #[default]
    Issuer,
    /// Cluster-wide issuer.
    ClusterIssuer,
}

/// Where TLS terminates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsTermination {
    /// The Ingress terminates TLS.
    #[default]
    Ingress,
    /// The data plane in the pod terminates TLS (Secret mounted at `/etc/cello/tls`).
    Pod,
}

/// Prometheus scraping.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Scrape the app at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Metrics path.
    #[serde(default = "default_metrics_path")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("metrics path must start with /"))]
    pub path: String,
    /// Metrics port: the app port (the default); another port is refused (`InvalidSpec`) until
    /// the data plane can serve metrics on a listener of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Scrape interval, a Prometheus duration.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(ms|s|m|h)$')").message("interval must look like 30s"))]
    pub interval: String,
    /// Which monitor object to create; `auto` picks ServiceMonitor when its CRD exists.
    #[serde(default)]
    pub monitor: MonitorKind,
    /// Extra labels on the monitor object (to match a Prometheus selector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            path: default_metrics_path(),
            port: None,
            interval: default_interval(),
            monitor: MonitorKind::Auto,
            labels: BTreeMap::new(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_metrics_path() -> String {
    "/metrics".into()
}
fn default_interval() -> String {
    "30s".into()
}

/// Monitor object kind.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MonitorKind {
    /// ServiceMonitor when the prometheus-operator CRDs exist, else scrape annotations.
    #[default]
    Auto,
    /// A ServiceMonitor.
    ServiceMonitor,
    /// A PodMonitor.
    PodMonitor,
    /// Scrape annotations only.
    None,
}

/// Autoscaling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxReplicas >= self.minReplicas")
    .message("autoscaling.maxReplicas must be at least minReplicas"))]
pub struct AutoscalingSpec {
    /// `none`, `hpa` (CPU) or `keda` (queue lag).
    #[serde(default)]
    pub mode: AutoscalingMode,
    /// Lower bound (KEDA allows 0).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Upper bound.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Target average CPU utilisation in percent (HPA, and a KEDA cpu trigger when set with keda).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: Option<i32>,
    /// KEDA polling interval in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,
    /// KEDA cooldown period in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cooldown_period: Option<i32>,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    10
}

/// Autoscaling mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingMode {
    /// Fixed replicas.
    #[default]
    None,
    /// HorizontalPodAutoscaler v2 on CPU.
    Hpa,
    /// KEDA ScaledObject on queue lag.
    Keda,
}

/// A queue the app produces to or consumes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.kind != 'kafka' || (has(self.topic) && has(self.bootstrapServers))")
        .message("a kafka queue needs topic and bootstrapServers"),
    validation = Rule::new("self.kind != 'rabbitmq' || (has(self.queueName) && has(self.hostSecret))")
        .message("a rabbitmq queue needs queueName and hostSecret"),
    validation = Rule::new("self.kind != 'redis' || (has(self.address) && has(self.listName) != has(self.streamName))")
        .message("a redis queue needs address and exactly one of listName or streamName"),
    validation = Rule::new("self.kind != 'sqs' || (has(self.queueUrl) && has(self.region))")
        .message("an sqs queue needs queueUrl and region"),
    validation = Rule::new("has(self.accessKeyIdSecret) == has(self.secretAccessKeySecret)")
        .message("accessKeyIdSecret and secretAccessKeySecret go together"),
)]
pub struct QueueBinding {
    /// Binding name; env vars are `CELLO_QUEUE_<NAME>_*` (upper case, `-` → `_`).
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([a-z0-9-]*[a-z0-9])?$')")
        .message("queue name must be a lowercase DNS label"))]
    pub name: String,
    /// Broker kind.
    pub kind: QueueKind,
    /// Kafka topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Kafka bootstrap servers (`host:port,...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// Kafka or Redis-stream consumer group (default `<app>-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// RabbitMQ queue name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    /// Secret key holding the RabbitMQ AMQP URL (`amqp://user:pass@host:5672/vhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_secret: Option<SecretKeyRef>,
    /// Redis list name (a reliable queue; producers `LPUSH`). Exclusive with `streamName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_name: Option<String>,
    /// Redis stream name, read with the consumer group `consumerGroup`. Exclusive with `listName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    /// Redis address `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Secret key holding a password (Redis) or SASL password (Kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// SQS queue URL (`https://sqs.<region>.amazonaws.com/<account>/<queue>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_url: Option<String>,
    /// SQS region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// SQS endpoint override for local stacks (LocalStack, moto), e.g. `http://localstack:4566`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret key holding the AWS access key id (SQS). Without it and `secretAccessKeySecret`,
    /// the pod's own identity (IRSA / EKS Pod Identity) is used, by the app and by KEDA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_secret: Option<SecretKeyRef>,
    /// Secret key holding the AWS secret access key (SQS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_secret: Option<SecretKeyRef>,
    /// KEDA target: lag (Kafka, Redis stream) or queue length (RabbitMQ, Redis list, SQS) per replica.
    #[serde(default = "default_target")]
    #[schemars(range(min = 1))]
    pub target: i32,
}

fn default_target() -> i32 {
    10
}

/// Queue broker kind.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// Apache Kafka.
    Kafka,
    /// RabbitMQ (AMQP).
    Rabbitmq,
    /// Redis list or stream.
    Redis,
    /// Amazon SQS (or an SQS-compatible local stack).
    Sqs,
}

/// A key of a Secret in the app's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key in the Secret.
    pub key: String,
}

/// A worker Deployment consuming one queue.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSpec {
    /// Consumer name; the Deployment is `<app>-<name>`.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([a-z0-9-]*[a-z0-9])?$')")
        .message("consumer name must be a lowercase DNS label"))]
    pub name: String,
    /// Name of the entry in `queues` this worker consumes.
    #[schemars(length(min = 1, max = 32))]
    pub queue: String,
    /// Consumer entry point as `module:attribute` (run with `cello consume`).
    #[schemars(length(min = 3, max = 256))]
    pub handler: String,
    /// Worker replicas (when not autoscaled by KEDA).
    #[serde(default = "default_workers")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Resources of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Rollout behaviour.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Deployment maxSurge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Deployment maxUnavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Restart pods when a referenced Secret or ConfigMap changes.
    #[serde(default = "default_true")]
    pub restart_on_config_change: bool,
    /// Seconds the data plane gets to drain on shutdown.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 1, max = 3600))]
    pub termination_grace_period_seconds: i64,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            max_surge: None,
            max_unavailable: None,
            restart_on_config_change: true,
            termination_grace_period_seconds: default_grace(),
        }
    }
}

fn default_grace() -> i64 {
    30
}

/// PodDisruptionBudget settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))")
    .message("set at most one of minAvailable and maxUnavailable"))]
pub struct DisruptionSpec {
    /// PDB minAvailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    /// PDB maxUnavailable (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// Pod template overrides.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    /// Extra pod labels (the operator's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Service account of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Pod security context (default: the restricted profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Operation switches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationSpec {
    /// Stop reconciling children (status is still reported).
    #[serde(default)]
    pub paused: bool,
    /// Scale the app and its consumers to zero and remove autoscalers.
    #[serde(default)]
    pub stopped: bool,
}

/// Observed state of a CellApp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellAppStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Ready`, `Progressing`, `Degraded`, and one per part).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Desired replicas of the app Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Updated replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// `ready/desired`, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_summary: Option<String>,
    /// Label selector of the pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// URL the app is reachable at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Image currently rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Consumer Deployments and their ready replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub consumers: Vec<ConsumerStatus>,
    /// Hash of the rendered config and referenced Secrets/ConfigMaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// Status of one consumer Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    /// Consumer name.
    pub name: String,
    /// Ready replicas.
    #[serde(default)]
    pub ready_replicas: i32,
}

impl CellApp {
    /// `spec.operation.paused`.
    pub fn paused(&self) -> bool {
        self.spec.operation.as_ref().is_some_and(|o| o.paused)
    }

    /// `spec.operation.stopped`.
    pub fn stopped(&self) -> bool {
        self.spec.operation.as_ref().is_some_and(|o| o.stopped)
    }

    /// The autoscaling mode in force (`none` when unset or stopped).
    pub fn autoscaling_mode(&self) -> AutoscalingMode {
        if self.stopped() {
            return AutoscalingMode::None;
        }
        self.spec.autoscaling.as_ref().map(|a| a.mode).unwrap_or_default()
    }
}
