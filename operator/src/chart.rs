//! The Helm chart's values as Rust types (source of `values.schema.json`), and the list of
//! generated files that `crdgen --write` writes and the drift test checks.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Values of `charts/cello-operator`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartValues {
    /// Operator image.
    pub image: ImageValues,
    /// Pull secrets for the operator image.
    pub image_pull_secrets: Vec<NameRef>,
    /// Operator replicas; more than one needs `leaderElection.enabled`.
    #[schemars(range(min = 0, max = 5))]
    pub replica_count: u8,
    /// Lease-based leader election, so that only one replica reconciles.
    pub leader_election: LeaderElectionValues,
    /// Watch one namespace with a Role instead of the whole cluster with a ClusterRole.
    #[schemars(regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"), length(max = 63))]
    pub watch_namespace: String,
    /// `RUST_LOG` filter.
    #[schemars(length(min = 1))]
    pub log_level: String,
    /// Port of `/metrics` and `/health`.
    #[schemars(range(min = 1024, max = 65535))]
    pub port: u16,
    /// Container resources.
    pub resources: Resources,
    /// Service account.
    pub service_account: ServiceAccountValues,
    /// ServiceMonitor for the operator's own metrics (needs the prometheus-operator CRDs).
    pub service_monitor: ServiceMonitorValues,
    /// Extra pod annotations.
    pub pod_annotations: BTreeMap<String, String>,
    /// Extra pod labels.
    pub pod_labels: BTreeMap<String, String>,
    /// Node selector.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations (Kubernetes `Toleration` objects).
    pub tolerations: Vec<serde_json::Value>,
    /// Affinity (a Kubernetes `Affinity` object).
    pub affinity: serde_json::Map<String, serde_json::Value>,
}

/// Image coordinates.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageValues {
    /// Repository.
    #[schemars(length(min = 1))]
    pub repository: String,
    /// Tag; empty means the chart's appVersion.
    pub tag: String,
    /// Pull policy.
    pub pull_policy: PullPolicy,
}

/// Image pull policy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq)]
pub enum PullPolicy {
    /// Always.
    Always,
    /// IfNotPresent.
    IfNotPresent,
    /// Never.
    Never,
}

/// Leader election settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElectionValues {
    /// Turn it on (a Role for Leases in the release namespace is added).
    pub enabled: bool,
}

/// A `{name: ...}` reference.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NameRef {
    /// Name.
    pub name: String,
}

/// Requests and limits.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Requests (`cpu`, `memory`).
    pub requests: BTreeMap<String, String>,
    /// Limits (`cpu`, `memory`).
    pub limits: BTreeMap<String, String>,
}

/// Service account settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountValues {
    /// Create the service account.
    pub create: bool,
    /// Name; empty means the release's full name.
    pub name: String,
    /// Annotations (e.g. for workload identity).
    pub annotations: BTreeMap<String, String>,
}

/// ServiceMonitor settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMonitorValues {
    /// Create it.
    pub enabled: bool,
    /// Scrape interval.
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub interval: String,
    /// Extra labels (to match a Prometheus selector).
    pub labels: BTreeMap<String, String>,
}

impl Default for ChartValues {
    fn default() -> Self {
        Self {
            image: ImageValues {
                repository: "ghcr.io/cello-dev/cello-operator".into(),
                tag: String::new(),
                pull_policy: PullPolicy::IfNotPresent,
            },
            image_pull_secrets: Vec::new(),
            replica_count: 1,
            leader_election: LeaderElectionValues { enabled: false },
            watch_namespace: String::new(),
            log_level: "info,kube=warn".into(),
            port: 8080,
            resources: Resources {
                requests: BTreeMap::from([("cpu".into(), "50m".into()), ("memory".into(), "64Mi".into())]),
                limits: BTreeMap::from([("memory".into(), "256Mi".into())]),
            },
            service_account: ServiceAccountValues {
                create: true,
                name: String::new(),
                annotations: BTreeMap::new(),
            },
            service_monitor: ServiceMonitorValues {
                enabled: false,
                interval: "30s".into(),
                labels: BTreeMap::new(),
            },
            pod_annotations: BTreeMap::new(),
            pod_labels: BTreeMap::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: serde_json::Map::new(),
        }
    }
}

/// `values.schema.json` (draft-07, which every Helm version understands).
pub fn values_schema() -> Result<String> {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<ChartValues>();
    let mut text =
        serde_json::to_string_pretty(&schema).map_err(|source| Error::Serialize { kind: "schema", source })?;
    text.push('\n');
    Ok(text)
}

/// RBAC rules as the YAML list the chart includes.
pub fn rbac_rules_yaml(rules: &[crate::rbac::Rule]) -> Result<String> {
    let rules: Vec<serde_json::Value> = rules
        .iter()
        .map(|r| serde_json::json!({"apiGroups": [r.group], "resources": [r.resource], "verbs": r.verbs()}))
        .collect();
    let body = serde_yaml::to_string(&rules).map_err(|e| Error::InvalidSpec(format!("rules to YAML: {e}")))?;
    Ok(format!(
        "# Generated from operator/src/rbac.rs by `crdgen --write`; do not edit.\n{body}"
    ))
}

/// Every generated file: (path relative to the repository root, content).
pub fn generated_files() -> Result<Vec<(&'static str, String)>> {
    let crd = crate::crd_yaml()?;
    Ok(vec![
        ("crds/cellapp.yaml", crd.clone()),
        ("charts/cello-operator/crds/cellapp.yaml", crd),
        ("charts/cello-operator/values.schema.json", values_schema()?),
        (
            "charts/cello-operator/files/rbac-rules.yaml",
            rbac_rules_yaml(crate::rbac::RULES)?,
        ),
        (
            "charts/cello-operator/files/leader-rules.yaml",
            rbac_rules_yaml(crate::rbac::LEADER_RULES)?,
        ),
        ("docs/config.md", cello_config::docs::config_markdown()),
        ("docs/env.md", cello_config::docs::env_markdown()),
    ])
}
