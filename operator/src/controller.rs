//! The controller runtime: capability discovery, watches, and the `/metrics` + `/health`
//! HTTP endpoint of the `cello-operator` binary.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::net::TcpListener;

use crate::cache::Caches;
use crate::crd::CellApp;
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile, Context};
use crate::resources::{labels, referenced_names, Capabilities};
use crate::FIELD_MANAGER;

/// Runtime settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (`WATCH_NAMESPACE`); all namespaces when `None`.
    pub namespace: Option<String>,
    /// How often optional CRDs are looked for again.
    pub capability_refresh: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            capability_refresh: Duration::from_secs(300),
        }
    }
}

async fn group_has(client: &Client, api_version: &str, plurals: &[&str], previous: bool) -> bool {
    match client.list_api_group_resources(api_version).await {
        Ok(list) => plurals.iter().all(|p| list.resources.iter().any(|r| r.name == *p)),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        // A flaky discovery call must not flip a kind off (that would stop managing it).
        Err(e) => {
            tracing::warn!(api_version, error = %e, "discovery failed; keeping previous answer");
            previous
        }
    }
}

/// Whether the server has `preStop.sleep`, from `/version`; a failed call keeps `previous`.
async fn sleep_action(client: &Client, previous: bool) -> bool {
    match client.apiserver_version().await {
        Ok(v) => match Capabilities::sleep_action_for(&v.major, &v.minor) {
            Some(b) => b,
            None => {
                tracing::warn!(major = %v.major, minor = %v.minor, git = %v.git_version, "unparsable server version; assuming no preStop.sleep");
                false
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "/version failed; keeping previous answer");
            previous
        }
    }
}

/// Find the server version's features and the optional CRDs (KEDA, prometheus-operator,
/// cert-manager). Run at start and every `capability_refresh`, so an upgraded API server or a
/// reconnect to another one is picked up.
pub async fn discover(client: &Client, previous: Capabilities) -> Capabilities {
    Capabilities {
        sleep_action: sleep_action(client, previous.sleep_action).await,
        keda: group_has(
            client,
            "keda.sh/v1alpha1",
            &["scaledobjects", "triggerauthentications"],
            previous.keda,
        )
        .await,
        service_monitor: group_has(
            client,
            "monitoring.coreos.com/v1",
            &["servicemonitors"],
            previous.service_monitor,
        )
        .await,
        pod_monitor: group_has(
            client,
            "monitoring.coreos.com/v1",
            &["podmonitors"],
            previous.pod_monitor,
        )
        .await,
        certificate: group_has(client, "cert-manager.io/v1", &["certificates"], previous.certificate).await,
    }
}

/// Apps in `store` that reference `kind/name` in `namespace` (or own the object).
fn referencing(store: &Store<CellApp>, kind: &str, obj_ns: Option<String>, name: &str) -> Vec<ObjectRef<CellApp>> {
    let wanted = format!("{kind}/{name}");
    store
        .state()
        .iter()
        .filter(|app| app.namespace() == obj_ns && referenced_names(app).contains(&wanted))
        .map(|app| ObjectRef::from_obj(app.as_ref()))
        .collect()
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Address of `/metrics` and `/health`: `CELLO_OPERATOR_HOST` when set, else the pod IP
/// (`POD_IP`, set by the chart), else loopback — so a binary run outside a cluster does not
/// listen on every interface.
pub fn metrics_host(host: Option<&str>, pod_ip: Option<&str>) -> Result<std::net::IpAddr, String> {
    fn pick(v: Option<&str>) -> Option<&str> {
        v.map(str::trim).filter(|v| !v.is_empty())
    }
    match pick(host).or(pick(pod_ip)) {
        Some(v) => v
            .parse()
            .map_err(|_| format!("CELLO_OPERATOR_HOST/POD_IP `{v}` is not an IP address")),
        None => Ok(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
    }
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let caps = discover(&client, Capabilities::default()).await;
    tracing::info!(?caps, "server features and optional CRDs discovered");
    let ns = settings.namespace.as_deref();

    // Owned kinds: one label-selected watch each, feeding both a reflector cache (read by the
    // reconciler instead of LIST calls) and the controller's owner-reference triggers.
    let managed = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, FIELD_MANAGER));
    let (deployments, deployments_w) = reflector::store();
    let (services, services_w) = reflector::store();
    let (config_maps, config_maps_w) = reflector::store();
    let (hpas, hpas_w) = reflector::store();
    let (ingresses, ingresses_w) = reflector::store();
    let (pdbs, pdbs_w) = reflector::store();
    let caches = Caches {
        deployments,
        services,
        config_maps,
        hpas,
        ingresses,
        pdbs,
    };
    macro_rules! cached {
        ($writer:expr, $kind:ty) => {
            reflector($writer, watcher(api::<$kind>(&client, ns), managed.clone()))
                .default_backoff()
                .touched_objects()
        };
    }

    let ctx = Arc::new(Context::new(client.clone(), caps, metrics).with_caches(caches));
    let refresh_ctx = ctx.clone();
    let refresh_client = client.clone();
    let every = settings.capability_refresh;
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let previous = refresh_ctx.capabilities.read().map(|c| *c).unwrap_or_default();
            let now = discover(&refresh_client, previous).await;
            if now != previous {
                tracing::info!(?now, "optional CRDs changed");
                if let Ok(mut c) = refresh_ctx.capabilities.write() {
                    *c = now;
                }
            }
        }
    });

    let controller = Controller::new(api::<CellApp>(&client, ns), watcher::Config::default().any_semantic());
    let store = controller.store();
    let secret_store = store.clone();
    let cm_store = store.clone();
    // Referenced Secrets and ConfigMaps are the user's (no label to select on): watch their
    // metadata only — no Secret data crosses the wire — and map them to the apps that use them.
    let unlabelled = watcher::Config::default();
    controller
        .owns_stream(cached!(deployments_w, Deployment))
        .owns_stream(cached!(services_w, Service))
        .owns_stream(cached!(config_maps_w, ConfigMap))
        .owns_stream(cached!(hpas_w, HorizontalPodAutoscaler))
        .owns_stream(cached!(ingresses_w, Ingress))
        .owns_stream(cached!(pdbs_w, PodDisruptionBudget))
        .watches_stream(
            watcher(api::<PartialObjectMeta<Secret>>(&client, ns), unlabelled.clone())
                .default_backoff()
                .touched_objects(),
            move |s: PartialObjectMeta<Secret>| referencing(&secret_store, "secret", s.namespace(), &s.name_any()),
        )
        .watches_stream(
            watcher(api::<PartialObjectMeta<ConfigMap>>(&client, ns), unlabelled)
                .default_backoff()
                .touched_objects(),
            move |c: PartialObjectMeta<ConfigMap>| referencing(&cm_store, "configmap", c.namespace(), &c.name_any()),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(app = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
    refresher.abort();
}

fn respond(metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/health" | "/healthz" | "/readyz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Serve `/metrics` and `/health` on `listener` until `shutdown` resolves.
pub async fn serve_http(listener: TcpListener, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = respond(&metrics, req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn metrics_listen_on_the_pod_ip_or_loopback_never_everywhere_by_default() {
        assert_eq!(metrics_host(None, None), Ok("127.0.0.1".parse().expect("ip")));
        assert_eq!(
            metrics_host(None, Some("10.1.2.3")),
            Ok("10.1.2.3".parse().expect("ip"))
        );
        assert_eq!(
            metrics_host(Some(""), Some("10.1.2.3")),
            Ok("10.1.2.3".parse().expect("ip"))
        );
        assert_eq!(
            metrics_host(Some("0.0.0.0"), Some("10.1.2.3")),
            Ok("0.0.0.0".parse().expect("ip"))
        );
        assert!(metrics_host(Some("localhost"), None).is_err());
    }

    #[test]
    fn pre_stop_sleep_exists_from_kubernetes_1_30() {
        let f = Capabilities::sleep_action_for;
        assert_eq!(f("1", "28"), Some(false));
        assert_eq!(f("1", "29+"), Some(false), "1.29: behind a feature gate");
        assert_eq!(f("1", "30"), Some(true));
        assert_eq!(f("1", "31+"), Some(true));
        assert_eq!(f("2", "0"), Some(true));
        assert_eq!(f("", ""), None);
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health_and_stops_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Arc::new(Metrics::default());
        metrics.failure("forbidden");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_http(listener, metrics, async {
            let _ = rx.await;
        }));
        let health = get(addr, "/health").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let m = get(addr, "/metrics").await;
        assert!(
            m.contains("cello_operator_reconcile_failures_total{reason=\"forbidden\"} 1"),
            "{m}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops")
            .expect("join");
    }

    #[test]
    fn secret_and_configmap_changes_map_to_the_apps_that_use_them() {
        let app = |name: &str, spec: serde_json::Value| -> CellApp {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cello.dev/v1alpha1", "kind": "CellApp",
                "metadata": {"name": name, "namespace": "prod"},
                "spec": {"image": "i", "app": "a:b", "envFrom": spec},
            }))
            .expect("app")
        };
        let (reader, mut writer) = kube::runtime::reflector::store::<CellApp>();
        writer.apply_watcher_event(&watcher::Event::Apply(app(
            "shop",
            serde_json::json!([{"secretRef": {"name": "db"}}]),
        )));
        writer.apply_watcher_event(&watcher::Event::Apply(app(
            "cart",
            serde_json::json!([{"configMapRef": {"name": "db"}}]),
        )));
        let names = |refs: Vec<ObjectRef<CellApp>>| refs.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(referencing(&reader, "secret", Some("prod".into()), "db")),
            ["shop"]
        );
        assert_eq!(
            names(referencing(&reader, "configmap", Some("prod".into()), "db")),
            ["cart"]
        );
        assert!(
            referencing(&reader, "secret", Some("other".into()), "db").is_empty(),
            "namespaces are separate"
        );
    }

    /// The controller's watches, against a mock API server that answers every LIST with an
    /// empty list and ends every WATCH: which kinds it watches, with which selector, and
    /// whether metadata-only — each allowed by the RBAC table.
    #[tokio::test]
    async fn watches_owned_kinds_by_label_and_referenced_objects_metadata_only() {
        use http::{Request as HReq, Response as HResp};
        let (service, mut handle) = tower_test::mock::pair::<HReq<kube::client::Body>, HResp<kube::client::Body>>();
        let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let record = seen.clone();
        let server = tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or_default().to_string();
                let watch = query.contains("watch=true");
                let metadata_only = req
                    .headers()
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("PartialObjectMetadata"));
                let selector = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("labelSelector="))
                    .unwrap_or_default()
                    .to_string();
                if let Some((g, r, v)) = crate::rbac::classify(req.method().as_str(), &path, &query) {
                    if !crate::rbac::allows(&g, &r, v) {
                        record
                            .lock()
                            .expect("seen")
                            .insert((format!("DENIED {v} {g}/{r}"), String::new(), false));
                    }
                    if v == "list" || v == "watch" {
                        record.lock().expect("seen").insert((r, selector, metadata_only));
                    }
                }
                let (code, body) = if path == "/version" || path.starts_with("/apis/") && path.matches('/').count() == 3
                {
                    (
                        404,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404}),
                    )
                } else if watch {
                    (200, serde_json::Value::Null)
                } else {
                    (
                        200,
                        serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
                    )
                };
                let bytes = if body.is_null() {
                    Vec::new()
                } else {
                    serde_json::to_vec(&body).expect("json")
                };
                let resp = HResp::builder()
                    .status(code)
                    .body(kube::client::Body::from(bytes))
                    .expect("response");
                send.send_response(resp);
            }
        });
        let client = Client::new(service, "default");
        let settings = Settings {
            namespace: Some("prod".into()),
            ..Settings::default()
        };
        let stop = tokio::time::sleep(Duration::from_millis(1500));
        run(client, settings, Arc::new(Metrics::default()), stop).await;
        server.abort();
        let seen = seen.lock().expect("seen").clone();
        let managed = "app.kubernetes.io%2Fmanaged-by%3Dcello-operator".to_string();
        for owned in [
            "deployments",
            "services",
            "configmaps",
            "horizontalpodautoscalers",
            "ingresses",
            "poddisruptionbudgets",
        ] {
            assert!(
                seen.contains(&(owned.to_string(), managed.clone(), false)),
                "{owned}: {seen:?}"
            );
        }
        for referenced in ["secrets", "configmaps"] {
            assert!(
                seen.contains(&(referenced.to_string(), String::new(), true)),
                "{referenced}: {seen:?}"
            );
        }
        assert!(!seen.iter().any(|(r, ..)| r.starts_with("DENIED")), "{seen:?}");
        // No full (non-metadata) unselected watch of Secrets or ConfigMaps.
        assert!(
            !seen.contains(&("secrets".to_string(), String::new(), false)),
            "{seen:?}"
        );
        assert!(
            !seen.contains(&("configmaps".to_string(), String::new(), false)),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn discovery_reads_api_groups() {
        use http::{Request as HReq, Response as HResp};
        let (service, mut handle) = tower_test::mock::pair::<HReq<kube::client::Body>, HResp<kube::client::Body>>();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((req, send)) = handle.next_request().await {
                let path = req.uri().path().to_string();
                let (code, body) = match path.as_str() {
                    "/apis/monitoring.coreos.com/v1" => (
                        200,
                        serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
                            "resources": [{"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true,
                                           "kind": "ServiceMonitor", "verbs": ["list"]}]}),
                    ),
                    "/version" => (
                        200,
                        serde_json::json!({"major": "1", "minor": "29+", "gitVersion": "v1.29.4-gke.1", "gitCommit": "",
                            "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "", "platform": ""}),
                    ),
                    "/apis/cert-manager.io/v1" => (
                        503,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": "unavailable", "reason": "ServiceUnavailable", "code": 503}),
                    ),
                    _ => (
                        404,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "not found", "reason": "NotFound", "code": 404}),
                    ),
                };
                seen.push(path);
                let resp = HResp::builder()
                    .status(code)
                    .body(kube::client::Body::from(serde_json::to_vec(&body).expect("json")))
                    .expect("response");
                send.send_response(resp);
            }
            seen
        });
        let client = Client::new(service, "default");
        let previous = Capabilities {
            certificate: true,
            ..Capabilities::default()
        };
        let caps = discover(&client, previous).await;
        drop(client);
        assert_eq!(
            caps,
            Capabilities {
                keda: false,
                service_monitor: true,
                pod_monitor: false,
                certificate: true,
                sleep_action: false,
            },
            "503 keeps the previous answer, 404 means absent, 1.29 has no preStop.sleep"
        );
        let seen = server.await.expect("server");
        assert!(
            seen.iter().all(|p| p.starts_with("/apis/") || p == "/version"),
            "{seen:?}"
        );
        assert!(seen.iter().any(|p| p == "/version"), "{seen:?}");
    }
}
