//! End-to-end tests against a real API server. They run only when `CELLO_E2E_KUBECONFIG` names a
//! kubeconfig (kind, k3d, ...); otherwise they return at once and say so.
//!
//! Covered: the CRD is accepted and established, a CellApp reconciles, a second reconcile
//! changes no resourceVersion, drift on a child is repaired, a removed consumer is deleted, and
//! status comes from the Deployment's status. Pods need not become ready (images are not pulled).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cello_operator::controller::discover;
use cello_operator::crd::CellApp;
use cello_operator::metrics::Metrics;
use cello_operator::reconcile::{reconcile, Context};
use cello_operator::resources::Capabilities;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, CustomResourceExt, ResourceExt};
use serde_json::json;

async fn client() -> Option<Client> {
    let Some(path) = std::env::var_os("CELLO_E2E_KUBECONFIG") else {
        eprintln!("skipped: set CELLO_E2E_KUBECONFIG to run the end-to-end tests");
        return None;
    };
    let kubeconfig = Kubeconfig::read_from(path).expect("read CELLO_E2E_KUBECONFIG");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Some(Client::try_from(config).expect("client"))
}

async fn versions(client: &Client, ns: &str) -> BTreeMap<String, String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=cello-operator");
    api.list(&lp)
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|d| (d.name_any(), d.resource_version().unwrap_or_default()))
        .collect()
}

async fn reconcile_latest(client: &Client, ctx: &Arc<Context>, ns: &str) {
    let apps: Api<CellApp> = Api::namespaced(client.clone(), ns);
    let app = apps.get("shop").await.expect("get CellApp");
    reconcile(Arc::new(app), ctx.clone()).await.expect("reconcile");
}

#[tokio::test]
async fn e2e_reconcile_against_a_real_api_server() {
    let Some(client) = client().await else { return };
    let ssa = PatchParams::apply("cello-e2e").force();

    // The CRD is accepted (structural schema, CEL rules compile server-side) and established.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch("cellapps.cello.dev", &ssa, &Patch::Apply(CellApp::crd()))
        .await
        .expect("CRD accepted");
    let established = await_condition(crds, "cellapps.cello.dev", conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("CRD established")
        .expect("watch");

    let ns = format!("cello-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let nsobj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &nsobj)
        .await
        .expect("namespace");

    let apps: Api<CellApp> = Api::namespaced(client.clone(), &ns);
    let spec = json!({
        "apiVersion": "cello.dev/v1alpha1", "kind": "CellApp", "metadata": {"name": "shop"},
        "spec": {"image": "ghcr.io/acme/shop:1", "app": "shop.main:app", "replicas": 2,
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

    let caps = discover(&client, Capabilities::default()).await;
    let ctx = Arc::new(Context::new(client.clone(), caps, Arc::new(Metrics::default())));
    reconcile_latest(&client, &ctx, &ns).await;
    let first = versions(&client, &ns).await;
    assert_eq!(
        first.keys().cloned().collect::<Vec<_>>(),
        ["shop", "shop-fulfil", "shop-mailer"]
    );

    // Idempotent: a second reconcile changes nothing.
    reconcile_latest(&client, &ctx, &ns).await;
    assert_eq!(
        versions(&client, &ns).await,
        first,
        "second reconcile changed a resourceVersion"
    );

    // Drift on an owned field is repaired.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let drift = json!({"spec": {"replicas": 7}});
    deployments
        .patch("shop", &PatchParams::default(), &Patch::Merge(&drift))
        .await
        .expect("drift");
    reconcile_latest(&client, &ctx, &ns).await;
    let dep = deployments.get("shop").await.expect("deployment");
    assert_eq!(dep.spec.replicas, Some(2), "drift not repaired");

    // Removing a consumer deletes its Deployment.
    let mut smaller = spec.clone();
    smaller["spec"]["consumers"] = json!([{"name": "fulfil", "queue": "orders", "handler": "shop.w:run"}]);
    apps.patch("shop", &ssa, &Patch::Apply(&smaller)).await.expect("update");
    reconcile_latest(&client, &ctx, &ns).await;
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

    namespaces
        .delete(&ns, &DeleteParams::background())
        .await
        .expect("cleanup");
}
