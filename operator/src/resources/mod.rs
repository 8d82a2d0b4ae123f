//! The pure builder: `desired(app, capabilities, refs)` → the child objects of a CellApp.
//!
//! Nothing here talks to the API server, reads the clock or the environment, so the output is
//! a deterministic function of its inputs (snapshot- and property-tested).

mod monitoring;
mod network;
pub mod queues;
mod scaling;
mod workload;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::ApiResource;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::crd::{AutoscalingMode, CellApp, MonitorKind};
use crate::{Error, Result};

/// Label keys the operator sets on every child.
pub mod labels {
    /// Application name.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// The CellApp the child belongs to.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `app`, `consumer`, `config`, ...
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// Always `cello`.
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// Always `cello-operator`; orphan deletion selects on it.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Consumer name on consumer Deployments and their pods.
    pub const CONSUMER: &str = "cello.dev/consumer";
}

/// Pod annotation carrying the config hash; a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "cello.dev/config-hash";
/// Image of the `cello-dataplane` container in sidecar mode when the spec names none.
pub const DEFAULT_DATAPLANE_IMAGE: &str = concat!("ghcr.io/cello-dev/cello-dataplane:", env!("CARGO_PKG_VERSION"));
/// Where `cello.yaml` is mounted.
pub const CONFIG_DIR: &str = "/etc/cello";
/// Seconds the preStop hook sleeps so endpoints are removed before the data plane drains.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;

/// Optional CRDs discovered in the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `keda.sh/v1alpha1` ScaledObject and TriggerAuthentication.
    pub keda: bool,
    /// `monitoring.coreos.com/v1` ServiceMonitor.
    pub service_monitor: bool,
    /// `monitoring.coreos.com/v1` PodMonitor.
    pub pod_monitor: bool,
    /// `cert-manager.io/v1` Certificate.
    pub certificate: bool,
    /// The API server knows `lifecycle.preStop.sleep` (Kubernetes 1.30+; 1.29 has it behind a
    /// feature gate and counts as without). Without it the pod gets an exec `sleep` hook, or in
    /// sidecar mode the data plane's own drain delay (its image has no shell tools).
    pub sleep_action: bool,
}

impl Capabilities {
    /// Every optional CRD installed.
    pub fn all() -> Self {
        Self {
            keda: true,
            service_monitor: true,
            pod_monitor: true,
            certificate: true,
            sleep_action: true,
        }
    }

    /// Whether a Kubernetes server of this `major`.`minor` version (as `/version` reports them,
    /// e.g. `1` and `29+`) has `preStop.sleep` on by default.
    pub fn sleep_action_for(major: &str, minor: &str) -> Option<bool> {
        let num = |s: &str| s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok();
        let (major, minor) = (num(major)?, num(minor)?);
        Some(major > 1 || (major == 1 && minor >= 30))
    }

    /// These capabilities with `kind`'s CRD marked missing.
    pub fn without(mut self, kind: Kind) -> Self {
        match kind {
            Kind::ScaledObject | Kind::TriggerAuthentication => self.keda = false,
            Kind::ServiceMonitor => self.service_monitor = false,
            Kind::PodMonitor => self.pod_monitor = false,
            Kind::Certificate => self.certificate = false,
            _ => {}
        }
        self
    }

    /// Whether `kind` can be applied in this cluster.
    pub fn has(&self, kind: Kind) -> bool {
        match kind {
            Kind::ScaledObject | Kind::TriggerAuthentication => self.keda,
            Kind::ServiceMonitor => self.service_monitor,
            Kind::PodMonitor => self.pod_monitor,
            Kind::Certificate => self.certificate,
            _ => true,
        }
    }
}

/// Digests of the Secrets and ConfigMaps the app references (`secret/<name>` → digest).
/// Folded into the config hash so that a change restarts the pods.
pub type ReferencedData = BTreeMap<String, String>;

/// Every kind of child the operator manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` ConfigMap.
    ConfigMap,
    /// `v1` Service.
    Service,
    /// `apps/v1` Deployment.
    Deployment,
    /// `autoscaling/v2` HorizontalPodAutoscaler.
    HorizontalPodAutoscaler,
    /// `keda.sh/v1alpha1` TriggerAuthentication.
    TriggerAuthentication,
    /// `keda.sh/v1alpha1` ScaledObject.
    ScaledObject,
    /// `policy/v1` PodDisruptionBudget.
    PodDisruptionBudget,
    /// `networking.k8s.io/v1` Ingress.
    Ingress,
    /// `cert-manager.io/v1` Certificate.
    Certificate,
    /// `monitoring.coreos.com/v1` ServiceMonitor.
    ServiceMonitor,
    /// `monitoring.coreos.com/v1` PodMonitor.
    PodMonitor,
}

impl Kind {
    /// All kinds, in apply order.
    pub const ALL: [Kind; 11] = [
        Kind::ConfigMap,
        Kind::Service,
        Kind::Deployment,
        Kind::HorizontalPodAutoscaler,
        Kind::TriggerAuthentication,
        Kind::ScaledObject,
        Kind::PodDisruptionBudget,
        Kind::Ingress,
        Kind::Certificate,
        Kind::ServiceMonitor,
        Kind::PodMonitor,
    ];

    /// (group, version, kind, plural).
    pub fn gvkp(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Kind::ConfigMap => ("", "v1", "ConfigMap", "configmaps"),
            Kind::Service => ("", "v1", "Service", "services"),
            Kind::Deployment => ("apps", "v1", "Deployment", "deployments"),
            Kind::HorizontalPodAutoscaler => (
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
            ),
            Kind::TriggerAuthentication => ("keda.sh", "v1alpha1", "TriggerAuthentication", "triggerauthentications"),
            Kind::ScaledObject => ("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
            Kind::PodDisruptionBudget => ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
            Kind::Ingress => ("networking.k8s.io", "v1", "Ingress", "ingresses"),
            Kind::Certificate => ("cert-manager.io", "v1", "Certificate", "certificates"),
            Kind::ServiceMonitor => ("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"),
            Kind::PodMonitor => ("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors"),
        }
    }

    /// Whether the kind comes from an optional CRD.
    pub fn is_optional(self) -> bool {
        !Capabilities::default().has(self)
    }

    /// The kind's name, e.g. `Deployment`.
    pub fn name(self) -> &'static str {
        self.gvkp().2
    }

    /// Dynamic API resource for `Api<DynamicObject>`.
    pub fn api_resource(self) -> ApiResource {
        let (group, version, kind, plural) = self.gvkp();
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version,
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    /// The status condition that reports on this kind.
    pub fn condition(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::ConfigMap => "DeploymentAvailable",
            Kind::Service | Kind::Ingress => "ServiceReady",
            Kind::Certificate => "CertificateReady",
            Kind::HorizontalPodAutoscaler | Kind::ScaledObject | Kind::TriggerAuthentication => "AutoscalerReady",
            Kind::ServiceMonitor | Kind::PodMonitor => "MetricsReady",
            Kind::PodDisruptionBudget => "DeploymentAvailable",
        }
    }
}

/// One child object, ready for server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    /// Its kind.
    pub kind: Kind,
    /// `metadata.name`.
    pub name: String,
    /// The full object (apiVersion, kind, metadata, spec).
    pub object: Value,
}

/// An optional child that was wanted but whose CRD is not installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The kind that was not created.
    pub kind: Kind,
    /// Why it was wanted, for the condition message.
    pub because: String,
}

/// The output of [`desired`].
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Children in apply order. Empty when the app is paused.
    pub children: Vec<Child>,
    /// Optional children not created because their CRD is missing.
    pub skipped: Vec<Skipped>,
    /// `spec.operation.paused`: apply nothing, delete nothing.
    pub paused: bool,
    /// Hash of the rendered config and the referenced Secrets/ConfigMaps.
    pub config_hash: String,
    /// Label selector of the app pods, as `k=v,k=v`.
    pub selector: String,
    /// Where the app is reachable.
    pub url: String,
}

impl Desired {
    /// Names of the children of `kind`.
    pub fn names(&self, kind: Kind) -> impl Iterator<Item = &str> {
        self.children
            .iter()
            .filter(move |c| c.kind == kind)
            .map(|c| c.name.as_str())
    }
}

/// Everything the builders share about one CellApp.
pub(crate) struct Ctx<'a> {
    pub app: &'a CellApp,
    pub caps: &'a Capabilities,
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub config_hash: String,
    pub cello_yaml: String,
}

impl Ctx<'_> {
    /// Child name `<app>-<suffix>`, DNS-1035-safe and ≤ 63 characters.
    pub fn child_name(&self, suffix: &str) -> String {
        dns_name(&format!("{}-{suffix}", self.name))
    }

    /// The app's own name as a DNS-1035 label (Service, Deployment).
    pub fn app_name(&self) -> String {
        dns_name(&self.name)
    }

    /// Labels of a child for `component`.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut l = self.selector(component);
        l.insert(labels::NAME.into(), label_value(&self.name));
        l.insert(labels::PART_OF.into(), "cello".into());
        l.insert(labels::MANAGED_BY.into(), crate::FIELD_MANAGER.into());
        l
    }

    /// The immutable selector of `component`: depends on the app name only, never on the spec.
    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::INSTANCE.to_string(), label_value(&self.name)),
            (labels::COMPONENT.to_string(), component.to_string()),
        ])
    }

    /// Metadata of a child: name, namespace, labels, controller owner reference.
    pub fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    pub fn metrics(&self) -> Option<crate::crd::MetricsSpec> {
        let m = self.app.spec.metrics.clone().unwrap_or_default();
        m.enabled.then_some(m)
    }

    /// The monitor object that will be created, if any (`None`: scrape annotations or off).
    pub fn monitor_kind(&self) -> Option<Kind> {
        let m = self.metrics()?;
        match m.monitor {
            MonitorKind::Auto if self.caps.service_monitor => Some(Kind::ServiceMonitor),
            MonitorKind::ServiceMonitor if self.caps.service_monitor => Some(Kind::ServiceMonitor),
            MonitorKind::PodMonitor if self.caps.pod_monitor => Some(Kind::PodMonitor),
            _ => None,
        }
    }

    /// Whether the consumer pods get a PodMonitor of their own (`<app>-consumers`): when the
    /// app's metrics go through a monitor object and PodMonitor is installed. Otherwise they
    /// carry scrape annotations (they have no Service a ServiceMonitor could select).
    pub fn consumer_pod_monitor(&self) -> bool {
        !self.app.spec.consumers.is_empty() && self.monitor_kind().is_some() && self.caps.pod_monitor
    }

    /// Autoscaling that actually happens: KEDA without its CRDs scales nothing.
    pub fn effective_autoscaling(&self) -> AutoscalingMode {
        match self.app.autoscaling_mode() {
            AutoscalingMode::Keda if !self.caps.keda => AutoscalingMode::None,
            m => m,
        }
    }
}

fn to_value<T: Serialize>(kind: &'static str, obj: &T) -> Result<Value> {
    serde_json::to_value(obj).map_err(|source| Error::Serialize { kind, source })
}

/// Build the desired children of `app`.
///
/// `caps` says which optional CRDs exist; `refs` holds digests of referenced Secrets and
/// ConfigMaps (see [`referenced_names`]).
pub fn desired(app: &CellApp, caps: &Capabilities, refs: &ReferencedData) -> Result<Desired> {
    let name = app.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = app.namespace().ok_or(Error::MissingNamespace)?;
    let mut owner = app.controller_owner_ref(&()).ok_or(Error::MissingMetadata("uid"))?;
    // Foreground deletion of the CellApp waits for its children only with this set.
    owner.block_owner_deletion = Some(true);
    let server = workload::server_config(app, caps)?;
    let cello_yaml = serde_yaml::to_string(&server).map_err(|e| Error::InvalidSpec(format!("spec.server: {e}")))?;
    let restart_on_change = app.spec.rollout.as_ref().is_none_or(|r| r.restart_on_config_change);
    let config_hash = config_hash(&cello_yaml, if restart_on_change { Some(refs) } else { None });
    let ctx = Ctx {
        app,
        caps,
        name,
        namespace,
        owner,
        config_hash,
        cello_yaml,
    };

    let selector = ctx
        .selector("app")
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let url = network::url(&ctx);
    let paused = app.paused();
    let mut out = Desired {
        children: Vec::new(),
        skipped: Vec::new(),
        paused,
        config_hash: ctx.config_hash.clone(),
        selector,
        url,
    };
    if paused {
        return Ok(out);
    }

    let mut children = vec![
        Child {
            kind: Kind::ConfigMap,
            name: ctx.child_name("config"),
            object: workload::config_map(&ctx)?,
        },
        Child {
            kind: Kind::Service,
            name: ctx.app_name(),
            object: network::service(&ctx)?,
        },
        Child {
            kind: Kind::Deployment,
            name: ctx.app_name(),
            object: workload::deployment(&ctx)?,
        },
    ];
    for c in &app.spec.consumers {
        let d = workload::consumer_deployment(&ctx, c)?;
        children.push(Child {
            kind: Kind::Deployment,
            name: ctx.child_name(&c.name),
            object: d,
        });
    }
    scaling::autoscalers(&ctx, &mut children, &mut out.skipped)?;
    if let Some(pdb) = scaling::pdb(&ctx)? {
        children.push(Child {
            kind: Kind::PodDisruptionBudget,
            name: ctx.app_name(),
            object: pdb,
        });
    }
    if let Some(ing) = network::ingress(&ctx)? {
        children.push(Child {
            kind: Kind::Ingress,
            name: ctx.app_name(),
            object: ing,
        });
    }
    network::certificate(&ctx, &mut children, &mut out.skipped);
    monitoring::monitor(&ctx, &mut children, &mut out.skipped);

    // Apply order is by kind (dependencies first); stable within a kind.
    children.sort_by_key(|c| c.kind);
    out.children = children;
    Ok(out)
}

/// Secrets and ConfigMaps referenced by the spec, as `secret/<name>` and `configmap/<name>`:
/// the reconciler reads them and passes their digests to [`desired`].
pub fn referenced_names(app: &CellApp) -> Vec<String> {
    let spec = &app.spec;
    let mut out = std::collections::BTreeSet::new();
    for e in &spec.env_vars {
        if let Some(vf) = &e.value_from {
            if let Some(s) = &vf.secret_key_ref {
                out.insert(format!("secret/{}", s.name));
            }
            if let Some(c) = &vf.config_map_key_ref {
                out.insert(format!("configmap/{}", c.name));
            }
        }
    }
    for e in &spec.env_from {
        if let Some(s) = &e.secret_ref {
            out.insert(format!("secret/{}", s.name));
        }
        if let Some(c) = &e.config_map_ref {
            out.insert(format!("configmap/{}", c.name));
        }
    }
    for q in &spec.queues {
        let secrets = [
            &q.host_secret,
            &q.password_secret,
            &q.access_key_id_secret,
            &q.secret_access_key_secret,
        ];
        for s in secrets.into_iter().flatten() {
            out.insert(format!("secret/{}", s.name));
        }
    }
    out.into_iter().collect()
}

/// Digest of a Secret's or ConfigMap's data, independent of map order.
pub fn data_digest<'a>(entries: impl IntoIterator<Item = (&'a String, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    let sorted: BTreeMap<&String, &[u8]> = entries.into_iter().collect();
    for (k, v) in sorted {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    hex(&h.finalize()[..16])
}

/// The config hash: the rendered `cello.yaml` plus referenced data, length-prefixed so that
/// no two different inputs concatenate to the same bytes.
pub fn config_hash(cello_yaml: &str, refs: Option<&ReferencedData>) -> String {
    let mut h = Sha256::new();
    h.update((cello_yaml.len() as u64).to_be_bytes());
    h.update(cello_yaml.as_bytes());
    for (k, v) in refs.into_iter().flatten() {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    hex(&h.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A DNS-1035 label (≤ 63, `[a-z]([-a-z0-9]*[a-z0-9])?`) for `raw`: `raw` itself when it is
/// one, else a readable prefix plus a hash of `raw`, so distinct inputs stay distinct.
pub fn dns_name(raw: &str) -> String {
    if is_dns_label(raw) {
        return raw.to_string();
    }
    let digest = hex(&Sha256::digest(raw.as_bytes())[..4]);
    let mut keep: String = raw
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !keep.starts_with(|c: char| c.is_ascii_lowercase()) {
        keep.insert(0, 'c');
    }
    keep.truncate(63 - 1 - digest.len());
    let keep = keep.trim_end_matches('-');
    format!("{keep}-{digest}")
}

/// A label value (≤ 63, alphanumeric at both ends) for `raw`, hashed when too long.
pub fn label_value(raw: &str) -> String {
    let ok = |s: &str| {
        s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if raw.is_empty() || ok(raw) {
        return raw.to_string();
    }
    dns_name(raw)
}

/// Label selector string for listing the children of `app_name` (orphan deletion).
pub fn children_selector(app_name: &str) -> String {
    format!(
        "{}={},{}={}",
        labels::MANAGED_BY,
        crate::FIELD_MANAGER,
        labels::INSTANCE,
        label_value(app_name)
    )
}
