//! Reconcile one CellApp: read referenced data → build the desired set → server-side apply
//! each child → delete orphans by label → compute conditions → apply `/status` → publish an
//! Event when the summary changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::{json, Value};

use crate::cache::Caches;
use crate::crd::{AutoscalingMode, CellApp, CellAppStatus, ConsumerStatus};
use crate::metrics::Metrics;
use crate::resources::{self, children_selector, desired, Capabilities, Desired, Kind, ReferencedData};
use crate::{Error, Result, FIELD_MANAGER};

/// Stable condition reasons: never free text, so alerts and scripts can match on them.
pub mod reason {
    /// Everything applied and observed healthy.
    pub const RECONCILED: &str = "Reconciled";
    /// A rollout has not finished yet.
    pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
    /// The API server refused a child for a reason other than the ones below.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// The operator's service account may not make a call (HTTP 403).
    pub const FORBIDDEN: &str = "Forbidden";
    /// An optional kind was wanted but its CRD is not installed.
    pub const CRD_NOT_INSTALLED: &str = "CRDNotInstalled";
    /// The spec cannot be turned into valid children (including HTTP 422 from the API server).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// `spec.operation.paused` is set.
    pub const PAUSED: &str = "Paused";
}

/// Shared state of the controller.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Optional CRDs found by discovery (refreshed by the controller).
    pub capabilities: RwLock<Capabilities>,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Event publisher.
    pub recorder: Recorder,
    /// The clock for condition timestamps (fixed in tests).
    pub clock: Box<dyn Fn() -> Time + Send + Sync>,
    /// Reflector caches of the owned kinds (set by the controller); without them, children are
    /// listed from the API server.
    pub caches: Option<Caches>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context with the real clock.
    pub fn new(client: Client, capabilities: Capabilities, metrics: Arc<Metrics>) -> Self {
        Self::with_clock(
            client,
            capabilities,
            metrics,
            Box::new(|| Time(k8s_openapi::jiff::Timestamp::now())),
        )
    }

    /// A context with a given clock.
    pub fn with_clock(
        client: Client,
        capabilities: Capabilities,
        metrics: Arc<Metrics>,
        clock: Box<dyn Fn() -> Time + Send + Sync>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            capabilities: RwLock::new(capabilities),
            metrics,
            clock,
            caches: None,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// This context reading owned children from `caches` instead of listing them.
    pub fn with_caches(mut self, caches: Caches) -> Self {
        self.caches = Some(caches);
        self
    }

    fn caps(&self) -> Capabilities {
        self.capabilities.read().map(|c| *c).unwrap_or_default()
    }

    fn failures(&self, key: &str, bump: bool) -> u32 {
        let Ok(mut map) = self.failures.lock() else { return 0 };
        if bump {
            let n = map.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            map.remove(key);
            0
        }
    }
}

/// Per-object exponential backoff: 5 s, 10 s, 20 s, ... capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_secs((5u64 << exp).min(300))
}

fn key(app: &CellApp) -> String {
    format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any())
}

/// The controller's error policy: count the failure and back off per object.
pub fn error_policy(app: Arc<CellApp>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(err.metric_label());
    let n = ctx.failures(&key(&app), true);
    tracing::warn!(app = %key(&app), error = %err, failures = n, "reconcile failed");
    Action::requeue(backoff(n))
}

/// Reconcile one CellApp (the controller's reconcile function).
pub async fn reconcile(app: Arc<CellApp>, ctx: Arc<Context>) -> Result<Action> {
    let start = Instant::now();
    let res = reconcile_inner(&app, &ctx).await;
    ctx.metrics.reconciled(start.elapsed());
    if res.is_ok() {
        ctx.failures(&key(&app), false);
    }
    res
}

/// What the apply responses told us about the children.
#[derive(Default, Debug)]
struct Observed {
    deployment: Option<Value>,
    consumers: BTreeMap<String, i32>,
    certificate_ready: Option<bool>,
    failures: Vec<Failure>,
}

/// A child (or the orphan cleanup) the API server refused.
#[derive(Debug)]
struct Failure {
    /// `Service shop`, `orphan cleanup`.
    what: String,
    /// The condition that reports it.
    condition: &'static str,
    error: Error,
}

impl Failure {
    fn message(&self) -> String {
        format!("{}: {}", self.what, self.error)
    }
}

async fn reconcile_inner(app: &CellApp, ctx: &Context) -> Result<Action> {
    let ns = app.namespace().ok_or(Error::MissingNamespace)?;
    let name = app.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let caps = ctx.caps();
    let refs = referenced_data(app, &ctx.client, &ns).await?;

    let plan = match desired(app, &caps, &refs) {
        Ok(plan) => plan,
        Err(e @ (Error::InvalidSpec(_) | Error::InvalidServerConfig(_))) => {
            // Retrying cannot help: wait for the next spec change.
            let status = status_for_error(app, ctx, reason::INVALID_SPEC, &e.to_string(), None);
            patch_status(app, ctx, &ns, &name, status).await?;
            ctx.metrics.failure(e.metric_label());
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };

    if plan.paused {
        let status = paused_status(app, ctx, &plan);
        patch_status(app, ctx, &ns, &name, status).await?;
        return Ok(Action::await_change());
    }

    // Children are applied independently: one the API server refuses must not stop the repair
    // of the others. Each failure is reported on its own condition.
    let mut observed = Observed::default();
    for child in &plan.children {
        if let Err(e) = hand_over_replicas(ctx, &ns, child).await {
            tracing::warn!(app = %key(app), name = %child.name, error = %e, "replicas hand-over failed");
        }
        match apply(ctx, &ns, child).await {
            Ok(applied) => observe(&mut observed, child, &name, applied),
            Err(e) => {
                // The CRD went away since discovery: stop using the kind now rather than at the
                // next refresh, so the retry reports CRDNotInstalled instead of failing again.
                if e.api_code() == Some(404) && child.kind.is_optional() {
                    if let Ok(mut c) = ctx.capabilities.write() {
                        *c = c.without(child.kind);
                    }
                }
                // An API server without `preStop.sleep` (mid-upgrade HA control plane, or a
                // version answer that was wrong): use the exec fallback from the retry on.
                if rejects_sleep_action(child, &e) {
                    tracing::warn!(name = %child.name, "the API server rejects preStop.sleep; using exec sleep");
                    if let Ok(mut c) = ctx.capabilities.write() {
                        c.sleep_action = false;
                    }
                }
                tracing::warn!(app = %key(app), kind = child.kind.name(), name = %child.name, error = %e, "apply failed");
                observed.failures.push(Failure {
                    what: format!("{} {}", child.kind.name(), child.name),
                    condition: child.kind.condition(),
                    error: e,
                });
            }
        }
    }
    if let Err(e) = delete_orphans(app, ctx, &ns, &name, &plan, &caps).await {
        tracing::warn!(app = %key(app), error = %e, "orphan cleanup failed");
        observed.failures.push(Failure {
            what: "orphan cleanup".into(),
            condition: "Degraded",
            error: e,
        });
    }

    let status = status_for(app, ctx, &plan, &observed);
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    patch_status(app, ctx, &ns, &name, status).await?;
    ctx.metrics.set_ready(&key(app), ready);
    // A failure goes to the error policy (counted, backed off per object).
    if let Some(f) = observed.failures.into_iter().next() {
        return Err(f.error);
    }
    Ok(Action::requeue(Duration::from_secs(if ready { 300 } else { 15 })))
}

fn rejects_sleep_action(child: &resources::Child, err: &Error) -> bool {
    let Error::Kube(kube::Error::Api(s)) = err else {
        return false;
    };
    child.kind == Kind::Deployment
        && matches!(s.code, 400 | 422 | 500)
        && s.message.contains("sleep")
        && child.object.to_string().contains("\"sleep\":{")
}

/// The stable condition reason for an API error on a child: `Forbidden` for 403, else
/// `ApplyFailed` (a server rejection of a child is not a bad spec).
fn failure_reason(err: &Error) -> &'static str {
    match err.api_code() {
        Some(403) => reason::FORBIDDEN,
        _ => reason::APPLY_FAILED,
    }
}

/// Digests of referenced Secrets/ConfigMaps; a missing one counts as "missing" (the pod
/// will report it), not as an error of the operator.
async fn referenced_data(app: &CellApp, client: &Client, ns: &str) -> Result<ReferencedData> {
    let mut out = ReferencedData::new();
    for r in resources::referenced_names(app) {
        let digest = match r.split_once('/') {
            Some(("secret", n)) => {
                let api: Api<Secret> = Api::namespaced(client.clone(), ns);
                api.get_opt(n).await?.map(|s| {
                    let data = s.data.unwrap_or_default();
                    resources::data_digest(data.iter().map(|(k, v)| (k, v.0.as_slice())))
                })
            }
            Some(("configmap", n)) => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                api.get_opt(n).await?.map(|c| {
                    let data = c.data.unwrap_or_default();
                    resources::data_digest(data.iter().map(|(k, v)| (k, v.as_bytes())))
                })
            }
            _ => None,
        };
        out.insert(r, digest.unwrap_or_else(|| "missing".into()));
    }
    Ok(out)
}

fn dynamic_api(client: &Client, ns: &str, kind: Kind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &kind.api_resource())
}

async fn apply(ctx: &Context, ns: &str, child: &resources::Child) -> Result<DynamicObject> {
    let api = dynamic_api(&ctx.client, ns, child.kind);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&child.name, &pp, &Patch::Apply(&child.object)).await {
        // A hand-edited Service port merges with ours into a duplicate name or port (422):
        // replace the whole `ports` list the operator owns (a JSON merge patch replaces lists),
        // then apply again.
        Err(kube::Error::Api(s)) if s.code == 422 && child.kind == Kind::Service => {
            tracing::info!(name = %child.name, "Service ports conflict; replacing the port list");
            let ports = json!({"spec": {"ports": child.object["spec"]["ports"]}});
            let mp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            api.patch(&child.name, &mp, &Patch::Merge(&ports)).await?;
            Ok(api.patch(&child.name, &pp, &Patch::Apply(&child.object)).await?)
        }
        other => Ok(other?),
    }
}

/// Field manager that keeps a Deployment's current `replicas` while an autoscaler takes over.
pub const HANDOVER_MANAGER: &str = "cello-operator-handover";

/// Switching to an autoscaler drops `spec.replicas` from our apply. If we owned the field alone,
/// the API server would remove it and reset the Deployment to 1 replica. So first apply the
/// live count under a second field manager: the field stays, at its current value, until the
/// autoscaler's first scale takes it over (the documented SSA hand-over).
async fn hand_over_replicas(ctx: &Context, ns: &str, child: &resources::Child) -> Result<()> {
    if child.kind != Kind::Deployment || child.object["spec"].get("replicas").is_some() {
        return Ok(());
    }
    let live = match &ctx.caches {
        Some(c) => c.deployment(ns, &child.name),
        None => {
            Api::<Deployment>::namespaced(ctx.client.clone(), ns)
                .get_opt(&child.name)
                .await?
        }
    };
    let Some(live) = live else { return Ok(()) };
    let ours = live.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:spec").and_then(|s| s.get("f:replicas")).is_some())
    });
    let Some(replicas) = live.spec.replicas.filter(|_| ours) else {
        return Ok(());
    };
    let body = json!({
        "apiVersion": child.object["apiVersion"],
        "kind": child.object["kind"],
        "metadata": {"name": child.name, "namespace": ns},
        "spec": {"replicas": replicas},
    });
    tracing::info!(name = %child.name, replicas, "handing replicas over to the autoscaler");
    dynamic_api(&ctx.client, ns, child.kind)
        .patch(&child.name, &PatchParams::apply(HANDOVER_MANAGER), &Patch::Apply(&body))
        .await?;
    Ok(())
}

fn observe(obs: &mut Observed, child: &resources::Child, app_name: &str, applied: DynamicObject) {
    let status = applied.data.get("status").cloned();
    match child.kind {
        Kind::Deployment if child.name == resources::dns_name(app_name) => obs.deployment = Some(applied.data),
        Kind::Deployment => {
            let ready = status.as_ref().and_then(|s| s["readyReplicas"].as_i64()).unwrap_or(0);
            let consumer = child.object["metadata"]["labels"][resources::labels::CONSUMER]
                .as_str()
                .unwrap_or_default();
            obs.consumers
                .insert(consumer.to_string(), i32::try_from(ready).unwrap_or(i32::MAX));
        }
        Kind::Certificate => {
            let ready = status
                .as_ref()
                .and_then(|s| s["conditions"].as_array())
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            obs.certificate_ready = Some(ready);
        }
        _ => {}
    }
}

/// Delete children of managed kinds that carry this app's labels and controller reference but
/// are no longer desired. Kinds whose CRD is missing are skipped: no call is made for them.
async fn delete_orphans(
    app: &CellApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    plan: &Desired,
    caps: &Capabilities,
) -> Result<()> {
    let uid = app.uid().ok_or(Error::MissingMetadata("uid"))?;
    let lp = ListParams::default().labels(&children_selector(name));
    for kind in Kind::ALL.into_iter().filter(|k| caps.has(*k)) {
        let api = dynamic_api(&ctx.client, ns, kind);
        // Owned core kinds come from the reflector caches; optional kinds are listed by label.
        let found = match ctx.caches.as_ref().and_then(|c| c.children(kind, ns, name)) {
            Some(metas) => metas,
            None => api
                .list_metadata(&lp)
                .await?
                .items
                .into_iter()
                .map(|o| o.metadata)
                .collect(),
        };
        for meta in found {
            let obj_name = meta.name.clone().unwrap_or_default();
            let owned = meta
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true));
            if owned && !plan.names(kind).any(|n| n == obj_name) {
                tracing::info!(app = %key(app), kind = kind.name(), name = %obj_name, "deleting orphan");
                match api.delete(&obj_name, &DeleteParams::background()).await {
                    // A cache can lag behind a deletion: already gone is done.
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    other => {
                        other?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn condition(ctx: &Context, app: &CellApp, type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    let now = (ctx.clock)();
    let old = app
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status flips.
    let last_transition_time = match old {
        Some(o) if o.status == status => o.last_transition_time.clone(),
        _ => now,
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: app.metadata.generation,
        last_transition_time,
    }
}

fn base_status(app: &CellApp, plan: Option<&Desired>) -> CellAppStatus {
    let old = app.status.clone().unwrap_or_default();
    CellAppStatus {
        observed_generation: app.metadata.generation,
        conditions: Vec::new(),
        selector: plan.map(|p| p.selector.clone()).or(old.selector),
        url: plan.map(|p| p.url.clone()).or(old.url),
        config_hash: plan.map(|p| p.config_hash.clone()).or(old.config_hash),
        image: Some(app.spec.image.clone()),
        replicas: old.replicas,
        ready_replicas: old.ready_replicas,
        updated_replicas: old.updated_replicas,
        replica_summary: old.replica_summary,
        consumers: old.consumers,
    }
}

fn skipped_message(plan: &Desired, cond: &str) -> Option<String> {
    let s = plan.skipped.iter().find(|s| s.kind.condition() == cond)?;
    let (group, ..) = s.kind.gvkp();
    Some(format!(
        "{} not created: the {} CRD ({group}) is not installed; {}",
        s.kind.name(),
        s.kind.name(),
        s.because
    ))
}

fn status_for(app: &CellApp, ctx: &Context, plan: &Desired, obs: &Observed) -> CellAppStatus {
    let mut st = base_status(app, Some(plan));
    let dep_status = obs
        .deployment
        .as_ref()
        .map(|d| d["status"].clone())
        .unwrap_or(Value::Null);
    let int = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok());
    let desired_replicas = obs
        .deployment
        .as_ref()
        .and_then(|d| int(&d["spec"]["replicas"]))
        .unwrap_or(0);
    let ready = int(&dep_status["readyReplicas"]).unwrap_or(0);
    let updated = int(&dep_status["updatedReplicas"]).unwrap_or(0);
    let dep_generation = obs
        .deployment
        .as_ref()
        .and_then(|d| d["metadata"]["generation"].as_i64());
    let seen_generation = dep_status["observedGeneration"].as_i64();
    st.replicas = Some(desired_replicas);
    st.ready_replicas = Some(ready);
    st.updated_replicas = Some(updated);
    st.replica_summary = Some(format!("{ready}/{desired_replicas}"));
    st.consumers = obs
        .consumers
        .iter()
        .map(|(n, r)| ConsumerStatus {
            name: n.clone(),
            ready_replicas: *r,
        })
        .collect();

    let rolled_out = seen_generation.is_some() && seen_generation >= dep_generation;
    let available = rolled_out && ready >= desired_replicas && updated >= desired_replicas;
    let mut conds = vec![if available {
        condition(
            ctx,
            app,
            "DeploymentAvailable",
            true,
            reason::RECONCILED,
            format!("{ready}/{desired_replicas} replicas ready"),
        )
    } else {
        condition(
            ctx,
            app,
            "DeploymentAvailable",
            false,
            reason::ROLLOUT_IN_PROGRESS,
            format!("{ready}/{desired_replicas} replicas ready, {updated} updated"),
        )
    }];
    conds.push(condition(
        ctx,
        app,
        "ServiceReady",
        true,
        reason::RECONCILED,
        format!("serving at {}", plan.url),
    ));
    let mut degraded: Option<(String, String)> = None;
    let mut part = |name: &str, ok_message: &str, ready_override: Option<bool>| {
        if let Some(msg) = skipped_message(plan, name) {
            degraded.get_or_insert((reason::CRD_NOT_INSTALLED.into(), msg.clone()));
            conds.push(condition(ctx, app, name, false, reason::CRD_NOT_INSTALLED, msg));
        } else if ready_override == Some(false) {
            conds.push(condition(
                ctx,
                app,
                name,
                false,
                reason::ROLLOUT_IN_PROGRESS,
                "waiting for cert-manager".into(),
            ));
        } else {
            conds.push(condition(ctx, app, name, true, reason::RECONCILED, ok_message.into()));
        }
    };
    if app.autoscaling_mode() != AutoscalingMode::None {
        part("AutoscalerReady", "autoscaler applied", None);
    }
    if app.spec.metrics.as_ref().is_none_or(|m| m.enabled) {
        part("MetricsReady", "metrics scraping configured", None);
    }
    if app.spec.tls.as_ref().is_some_and(|t| t.issuer_ref.is_some()) {
        part("CertificateReady", "certificate issued", obs.certificate_ready);
    }
    conds.push(condition(
        ctx,
        app,
        "Progressing",
        !available,
        if available {
            reason::RECONCILED
        } else {
            reason::ROLLOUT_IN_PROGRESS
        },
        String::new(),
    ));
    match degraded {
        Some((r, m)) => conds.push(condition(ctx, app, "Degraded", true, &r, m)),
        None => conds.push(condition(
            ctx,
            app,
            "Degraded",
            false,
            reason::RECONCILED,
            String::new(),
        )),
    }
    conds.push(condition(ctx, app, "Paused", false, reason::RECONCILED, String::new()));
    let (ready_reason, ready_msg) = if available {
        (reason::RECONCILED, format!("{ready}/{desired_replicas} replicas ready"))
    } else {
        (
            reason::ROLLOUT_IN_PROGRESS,
            format!("{ready}/{desired_replicas} replicas ready"),
        )
    };
    conds.insert(0, condition(ctx, app, "Ready", available, ready_reason, ready_msg));
    // Failed children: each on its own condition (first failure wins per condition); the first
    // one also on Ready and Degraded.
    let mut seen = Vec::new();
    for f in &obs.failures {
        if seen.contains(&f.condition) {
            continue;
        }
        seen.push(f.condition);
        let c = condition(
            ctx,
            app,
            f.condition,
            f.condition == "Degraded",
            failure_reason(&f.error),
            f.message(),
        );
        match conds.iter_mut().find(|x| x.type_ == f.condition) {
            Some(slot) => *slot = c,
            None => conds.push(c),
        }
    }
    if let Some(f) = obs.failures.first() {
        let (r, m) = (failure_reason(&f.error), f.message());
        for (type_, ok) in [("Ready", false), ("Degraded", true)] {
            let c = condition(ctx, app, type_, ok, r, m.clone());
            if let Some(slot) = conds.iter_mut().find(|x| x.type_ == type_) {
                *slot = c;
            }
        }
    }
    st.conditions = conds;
    st
}

fn status_for_error(
    app: &CellApp,
    ctx: &Context,
    reason: &str,
    message: &str,
    plan: Option<&Desired>,
) -> CellAppStatus {
    let mut st = base_status(app, plan);
    st.conditions = vec![
        condition(ctx, app, "Ready", false, reason, message.into()),
        condition(ctx, app, "Degraded", true, reason, message.into()),
        condition(ctx, app, "Paused", false, reason::RECONCILED, String::new()),
    ];
    st
}

fn paused_status(app: &CellApp, ctx: &Context, plan: &Desired) -> CellAppStatus {
    let mut st = base_status(app, Some(plan));
    let old_ready = app
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
    let msg = "spec.operation.paused is set: children are not changed".to_string();
    st.conditions = vec![
        // Readiness is not re-evaluated while paused; keep what was last known.
        old_ready.unwrap_or_else(|| condition(ctx, app, "Ready", false, reason::PAUSED, msg.clone())),
        condition(ctx, app, "Paused", true, reason::PAUSED, msg),
    ];
    st
}

async fn patch_status(app: &CellApp, ctx: &Context, ns: &str, name: &str, status: CellAppStatus) -> Result<()> {
    let old_ready = summary(app.status.as_ref());
    let new_ready = summary(Some(&status));
    let changed = old_ready.as_ref().map(|(ok, r, _)| (*ok, r)) != new_ready.as_ref().map(|(ok, r, _)| (*ok, r));
    let api: Api<CellApp> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({"apiVersion": CellApp::api_version(&()), "kind": CellApp::kind(&()), "status": status});
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    // Events only on transitions of the Ready status or reason, so a steady state is silent.
    if changed {
        if let Some((ok, reason, message)) = new_ready {
            // A rollout in progress (the normal first reconcile) or a pause is not a warning.
            let warning = !ok && ![reason::ROLLOUT_IN_PROGRESS, reason::PAUSED].contains(&reason.as_str());
            let ev = Event {
                type_: if warning { EventType::Warning } else { EventType::Normal },
                reason,
                note: Some(message),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&ev, &app.object_ref(&())).await {
                tracing::warn!(app = %key(app), error = %e, "could not publish event");
            }
        }
    }
    Ok(())
}

fn summary(status: Option<&CellAppStatus>) -> Option<(bool, String, String)> {
    let c = status?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status == "True", c.reason.clone(), c.message.clone()))
}
