//! End-to-end tests against a real API server (kind, k3d, a cloud cluster; see
//! docs/operator.md). Ignored unless asked for:
//!
//! ```sh
//! CELLO_E2E_KUBECONFIG=~/.kube/config cargo test -p cello-operator --test e2e -- --ignored
//! ```
//!
//! Run with `--ignored` but without `CELLO_E2E_KUBECONFIG`, they fail rather than pass.
//!
//! Covered: the CRD is accepted and established; a CellApp reconciles **as the chart's service
//! account** (the RBAC table bound to an impersonated ServiceAccount, so a missing verb is a
//! 403 here); a second reconcile changes the resourceVersion of no child of any kind; drift on a
//! child is repaired; a removed consumer is deleted; status comes from the Deployment's status.
//! Pods need not become ready (images are not pulled). The namespace and the cluster-scoped
//! RBAC objects are deleted even when an assertion fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cello_operator::controller::discover;
use cello_operator::crd::CellApp;
use cello_operator::metrics::Metrics;
use cello_operator::rbac;
use cello_operator::reconcile::{reconcile, Context};
use cello_operator::resources::{children_selector, Capabilities, Kind};
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, CustomResourceExt, ResourceExt};
use serde_json::json;

const SA: &str = "cello-operator";

async fn config() -> Config {
    let path = std::env::var_os("CELLO_E2E_KUBECONFIG")
        .expect("CELLO_E2E_KUBECONFIG must name a kubeconfig for the end-to-end tests");
    let kubeconfig = Kubeconfig::read_from(path).expect("read CELLO_E2E_KUBECONFIG");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig")
}

/// A client that acts as the operator's ServiceAccount in `ns` (what the chart deploys).
fn as_service_account(mut config: Config, ns: &str) -> Client {
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:{SA}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".into(),
    ]);
    Client::try_from(config).expect("impersonating client")
}

/// resourceVersion of every child of every managed kind the cluster has.
async fn versions(client: &Client, ns: &str, caps: &Capabilities) -> BTreeMap<String, String> {
    let lp = ListParams::default().labels(&children_selector("shop"));
    let mut out = BTreeMap::new();
    for kind in Kind::ALL.into_iter().filter(|k| caps.has(*k)) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &kind.api_resource());
        for obj in api.list(&lp).await.expect("list").items {
            out.insert(
                format!("{}/{}", kind.name(), obj.name_any()),
                obj.resource_version().unwrap_or_default(),
            );
        }
    }
    out
}

async fn reconcile_latest(client: &Client, ctx: &Arc<Context>, ns: &str) {
    let apps: Api<CellApp> = Api::namespaced(client.clone(), ns);
    let app = apps.get("shop").await.expect("get CellApp");
    reconcile(Arc::new(app), ctx.clone()).await.expect("reconcile");
}

/// The chart's RBAC (the rules of `operator/src/rbac.rs`) bound to a ServiceAccount in `ns`.
async fn install_rbac(admin: &Client, ns: &str) {
    let pp = PostParams::default();
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": SA, "namespace": ns}})).expect("sa");
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(&pp, &sa)
        .await
        .expect("service account");
    let rules: Vec<_> = rbac::RULES
        .iter()
        .map(|r| json!({"apiGroups": [r.group], "resources": [r.resource], "verbs": r.verbs()}))
        .collect();
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": ns}, "rules": rules})).expect("role");
    Api::<ClusterRole>::all(admin.clone())
        .create(&pp, &role)
        .await
        .expect("cluster role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ns},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}],
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&pp, &binding)
        .await
        .expect("cluster role binding");
}

async fn cleanup(admin: &Client, ns: &str) {
    let dp = DeleteParams::background();
    let _ = Api::<ClusterRoleBinding>::all(admin.clone()).delete(ns, &dp).await;
    let _ = Api::<ClusterRole>::all(admin.clone()).delete(ns, &dp).await;
    if let Err(e) = Api::<Namespace>::all(admin.clone()).delete(ns, &dp).await {
        eprintln!("could not delete namespace {ns}: {e}");
    }
}

#[tokio::test]
#[ignore = "needs CELLO_E2E_KUBECONFIG"]
async fn e2e_reconcile_against_a_real_api_server() {
    let config = config().await;
    let admin = Client::try_from(config.clone()).expect("client");
    let ssa = PatchParams::apply("cello-e2e").force();

    // The CRD is accepted (structural schema, CEL rules compile server-side) and established.
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    crds.patch("cellapps.cello.dev", &ssa, &Patch::Apply(CellApp::crd()))
        .await
        .expect("CRD accepted");
    let established = await_condition(crds, "cellapps.cello.dev", conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("CRD established")
        .expect("watch");

    let ns = format!("cello-e2e-{}", std::process::id());
    let nsobj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &nsobj)
        .await
        .expect("namespace");
    // Clean up whatever happens; re-raise a failure afterwards.
    let outcome = std::panic::AssertUnwindSafe(scenario(config, admin.clone(), ns.clone()))
        .catch_unwind()
        .await;
    cleanup(&admin, &ns).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(config: Config, admin: Client, ns: String) {
    let ssa = PatchParams::apply("cello-e2e").force();
    install_rbac(&admin, &ns).await;
    let operator = as_service_account(config, &ns);

    let apps: Api<CellApp> = Api::namespaced(admin.clone(), &ns);
    let spec = json!({
        "apiVersion": "cello.dev/v1alpha1", "kind": "CellApp", "metadata": {"name": "shop"},
        "spec": {"image": "ghcr.io/acme/shop:1", "app": "shop.main:app", "replicas": 2,
                 "ingress": {"host": "shop.example.com"},
                 "queues": [{"name": "orders", "kind": "kafka", "topic": "o", "bootstrapServers": "k:9092"}],
                 "consumers": [{"name": "fulfil", "queue": "orders", "handler": "shop.w:run"},
                               {"name": "mailer", "queue": "orders", "handler": "shop.w:mail"}]}
    });
    apps.patch("shop", &ssa, &Patch::Apply(&spec))
        .await
        .expect("CellApp accepted");
    // The API server's CEL rules reject what the client-side tests reject.
    let bad = json!({"apiVersion": "cello.dev/v1alpha1", "kind": "CellApp", "metadata": {"name": "bad"},
                     "spec": {"image": "x", "app": "not-a-module"}});
    assert!(
        apps.patch("bad", &ssa, &Patch::Apply(&bad)).await.is_err(),
        "invalid app accepted"
    );

    // Discovery and every reconcile run as the service account: a verb missing from the RBAC
    // table fails here with 403.
    let caps = discover(&operator, Capabilities::default()).await;
    let ctx = Arc::new(Context::new(operator.clone(), caps, Arc::new(Metrics::default())));
    reconcile_latest(&operator, &ctx, &ns).await;
    let first = versions(&admin, &ns, &caps).await;
    for want in [
        "ConfigMap/shop-config",
        "Service/shop",
        "Deployment/shop",
        "Deployment/shop-fulfil",
        "Deployment/shop-mailer",
        "PodDisruptionBudget/shop",
        "Ingress/shop",
    ] {
        assert!(first.contains_key(want), "{want} not created: {first:?}");
    }

    // Idempotent: a second reconcile changes no child of any kind.
    reconcile_latest(&operator, &ctx, &ns).await;
    assert_eq!(
        versions(&admin, &ns, &caps).await,
        first,
        "second reconcile changed a resourceVersion"
    );

    // Drift on an owned field is repaired.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let drift = json!({"spec": {"replicas": 7}});
    deployments
        .patch("shop", &PatchParams::default(), &Patch::Merge(&drift))
        .await
        .expect("drift");
    reconcile_latest(&operator, &ctx, &ns).await;
    let dep = deployments.get("shop").await.expect("deployment");
    assert_eq!(dep.spec.replicas, Some(2), "drift not repaired");

    // Removing a consumer deletes its Deployment.
    let mut smaller = spec.clone();
    smaller["spec"]["consumers"] = json!([{"name": "fulfil", "queue": "orders", "handler": "shop.w:run"}]);
    apps.patch("shop", &ssa, &Patch::Apply(&smaller)).await.expect("update");
    reconcile_latest(&operator, &ctx, &ns).await;
    let gone = deployments.get_opt("shop-mailer").await.expect("get");
    assert!(
        gone.is_none_or(|d| d.metadata.deletion_timestamp.is_some()),
        "orphan kept"
    );

    // Status mirrors the Deployment.
    let app = apps.get_status("shop").await.expect("status");
    let status = app.status.expect("status written");
    assert_eq!(status.observed_generation, app.metadata.generation);
    assert_eq!(status.replicas, Some(2));
    assert!(status.conditions.iter().any(|c| c.type_ == "DeploymentAvailable"));
    assert!(
        !status.conditions.iter().any(|c| c.reason == "Forbidden"),
        "{:?}",
        status.conditions
    );
}
