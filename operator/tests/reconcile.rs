//! Scenario tests of the reconciler against a tower-test mock API server: every call's method,
//! path, query, content type and body is asserted, and checked against the RBAC table.

mod common;

use std::sync::{Arc, Mutex};

use cello_operator::cache::Caches;
use cello_operator::crd::CellApp;
use cello_operator::metrics::Metrics;
use cello_operator::rbac;
use cello_operator::reconcile::{backoff, error_policy, reconcile, Context};
use cello_operator::resources::{desired, Capabilities, ReferencedData};
use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use serde_json::{json, Value};

/// One request the operator made.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    /// Path and query, e.g. `/apis/apps/v1/namespaces/prod/deployments/shop?&force=true&...`.
    uri: String,
    content_type: String,
    body: Value,
    /// HTTP status the mock answered with.
    status: u16,
}

impl Call {
    fn line(&self) -> String {
        format!("{} {} {}", self.method, self.uri, self.content_type)
    }
    fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

type Responder = Box<dyn Fn(&Call) -> (u16, Value) + Send + Sync>;

const APPLY: &str = "?&force=true&fieldManager=cello-operator";
const APPLY_CT: &str = "application/apply-patch+yaml";
const LIST_Q: &str =
    "?&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dcello-operator%2Capp.kubernetes.io%2Finstance%3Dshop";

/// Runs `reconcile` against a mock API server answering with `respond`; returns the calls.
async fn run(
    app: CellApp,
    caps: Capabilities,
    respond: Responder,
) -> (kube::Result<Action, String>, Vec<Call>, Arc<Context>) {
    run_with(app, caps, respond, None).await
}

/// [`run`], with the controller's reflector caches when `caches` is set.
async fn run_with(
    app: CellApp,
    caps: Capabilities,
    respond: Responder,
    caches: Option<Caches>,
) -> (kube::Result<Action, String>, Vec<Call>, Arc<Context>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    let server = tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let call = Call {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body: if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("JSON body")
                },
                status: 0,
            };
            let (status, reply) = respond(&call);
            let mut call = call;
            call.status = status;
            recorded.lock().expect("calls").push(call);
            let resp = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).expect("reply")))
                .expect("response");
            send.send_response(resp);
        }
    });
    let client = Client::new(service, "default");
    let clock: Box<dyn Fn() -> Time + Send + Sync> = Box::new(|| Time("2026-11-25T10:00:00Z".parse().expect("time")));
    let mut ctx = Context::with_clock(client, caps, Arc::new(Metrics::default()), clock);
    if let Some(c) = caches {
        ctx = ctx.with_caches(c);
    }
    let ctx = Arc::new(ctx);
    let result = reconcile(Arc::new(app), ctx.clone())
        .await
        .map_err(|e| e.metric_label().to_string());
    // Every call must be one the chart's ClusterRole allows, with the verbs the API server
    // checks: an apply that creates the object (201) needs `create` as well as `patch`.
    let calls = calls.lock().expect("calls").clone();
    for c in &calls {
        let (path, query) = c.uri.split_once('?').unwrap_or((&c.uri, ""));
        let (g, r, verbs) = rbac::required_verbs(&c.method, path, query, c.status == 201)
            .unwrap_or_else(|| panic!("unclassified call {}", c.line()));
        for v in verbs {
            assert!(
                rbac::allows(&g, &r, v),
                "call {} needs {v} on {g}/{r}, which the RBAC table lacks",
                c.line()
            );
        }
    }
    server.abort();
    (result, calls, ctx)
}

fn status_error(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("mock {reason}"), "reason": reason, "code": code}),
    )
}

/// A healthy cluster: applies echo the object (Deployments report all replicas ready) and answer
/// 201 Created when the object is not in `existing` (as the API server does), lists return
/// `existing` for the matching plural, deletes succeed.
fn healthy(existing: Vec<(&'static str, Value)>) -> Responder {
    Box::new(move |c: &Call| match c.method.as_str() {
        "PATCH" => {
            let mut segments = c.path().rsplit('/');
            let (name, plural) = (segments.next().unwrap_or_default(), segments.next().unwrap_or_default());
            let exists = c.path().ends_with("/status")
                || existing
                    .iter()
                    .any(|(p, v)| *p == plural && v["metadata"]["name"] == name);
            let mut obj = c.body.clone();
            obj["metadata"]["generation"] = json!(1);
            obj["metadata"]["resourceVersion"] = json!("1");
            obj["metadata"]["uid"] = json!("child-uid");
            if c.path().contains("/deployments/") {
                let n = obj["spec"]["replicas"].as_i64().unwrap_or(1);
                obj["status"] =
                    json!({"observedGeneration": 1, "replicas": n, "readyReplicas": n, "updatedReplicas": n});
            }
            if c.path().ends_with("/status") {
                obj["metadata"]["name"] = json!("shop");
                obj["metadata"]["namespace"] = json!("prod");
                obj["spec"] = json!({"image": "x", "app": "a:b"});
            }
            (if exists { 200 } else { 201 }, obj)
        }
        "GET" if c.uri.contains("labelSelector") => {
            let plural = c.path().rsplit('/').next().unwrap_or_default();
            let items: Vec<Value> = existing
                .iter()
                .filter(|(p, _)| *p == plural)
                .map(|(_, v)| v.clone())
                .collect();
            (
                200,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        "GET" if c.path().contains("/secrets/") => (
            200,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "prod"},
                   "data": {"password": "aHVudGVyMg=="}}),
        ),
        "GET" => {
            // A named read: the object from `existing`, else 404.
            let mut segments = c.path().rsplit('/');
            let (name, plural) = (segments.next().unwrap_or_default(), segments.next().unwrap_or_default());
            match existing
                .iter()
                .find(|(p, v)| *p == plural && v["metadata"]["name"] == name)
            {
                Some((_, v)) => (200, v.clone()),
                None => status_error(404, "NotFound"),
            }
        }
        "DELETE" => (
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}),
        ),
        "POST" => (201, c.body.clone()),
        _ => status_error(405, "MethodNotAllowed"),
    })
}

/// The list calls for orphan deletion, one per managed kind whose CRD exists.
fn list_lines(caps: Capabilities) -> Vec<String> {
    let mut v = vec![
        "/api/v1/namespaces/prod/configmaps",
        "/api/v1/namespaces/prod/services",
        "/apis/apps/v1/namespaces/prod/deployments",
        "/apis/autoscaling/v2/namespaces/prod/horizontalpodautoscalers",
    ];
    if caps.keda {
        v.push("/apis/keda.sh/v1alpha1/namespaces/prod/triggerauthentications");
        v.push("/apis/keda.sh/v1alpha1/namespaces/prod/scaledobjects");
    }
    v.push("/apis/policy/v1/namespaces/prod/poddisruptionbudgets");
    v.push("/apis/networking.k8s.io/v1/namespaces/prod/ingresses");
    if caps.certificate {
        v.push("/apis/cert-manager.io/v1/namespaces/prod/certificates");
    }
    if caps.service_monitor {
        v.push("/apis/monitoring.coreos.com/v1/namespaces/prod/servicemonitors");
    }
    if caps.pod_monitor {
        v.push("/apis/monitoring.coreos.com/v1/namespaces/prod/podmonitors");
    }
    // Metadata-only lists (the orphan check needs names, labels and owners only).
    v.into_iter()
        .map(|p| format!("GET {p}{LIST_Q} application/json"))
        .collect()
}

fn apply_line(path: &str) -> String {
    format!("PATCH {path}{APPLY} {APPLY_CT}")
}

const STATUS_PATH: &str = "/apis/cello.dev/v1alpha1/namespaces/prod/cellapps/shop/status";
const EVENTS: &str = "POST /apis/events.k8s.io/v1/namespaces/prod/events? application/json";

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

fn condition<'a>(status_body: &'a Value, type_: &str) -> &'a Value {
    status_body["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status_body}"))
}

fn status_call(calls: &[Call]) -> &Call {
    calls.iter().find(|c| c.path() == STATUS_PATH).expect("status patched")
}

#[tokio::test]
async fn first_reconcile_applies_children_lists_orphans_writes_status_and_one_event() {
    let caps = Capabilities::all();
    let app = common::app(json!({}));
    let plan = desired(&app, &caps, &ReferencedData::new()).expect("plan");
    let (result, calls, _) = run(app, caps, healthy(vec![])).await;
    assert!(
        matches!(result, Ok(ref a) if *a == Action::requeue(std::time::Duration::from_secs(300))),
        "{result:?}"
    );

    let mut want = vec![
        apply_line("/api/v1/namespaces/prod/configmaps/shop-config"),
        apply_line("/api/v1/namespaces/prod/services/shop"),
        apply_line("/apis/apps/v1/namespaces/prod/deployments/shop"),
        apply_line("/apis/monitoring.coreos.com/v1/namespaces/prod/servicemonitors/shop"),
    ];
    want.extend(list_lines(caps));
    want.push(apply_line(STATUS_PATH));
    want.push(EVENTS.into());
    assert_eq!(lines(&calls), want);

    // Apply bodies are exactly the desired objects.
    for (call, child) in calls.iter().zip(&plan.children) {
        assert_eq!(call.body, child.object, "{}", call.uri);
    }
    let st = status_call(&calls);
    assert_eq!(st.body["apiVersion"], "cello.dev/v1alpha1");
    assert_eq!(st.body["kind"], "CellApp");
    assert_eq!(st.body["status"]["observedGeneration"], 3);
    assert_eq!(st.body["status"]["replicaSummary"], "1/1");
    assert_eq!(
        st.body["status"]["selector"],
        "app.kubernetes.io/component=app,app.kubernetes.io/instance=shop"
    );
    assert_eq!(st.body["status"]["url"], "http://shop.prod.svc:80");
    assert_eq!(st.body["status"]["configHash"], plan.config_hash.as_str());
    let ready = condition(&st.body, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Reconciled"))
    );
    assert_eq!(ready["observedGeneration"], 3);
    assert_eq!(ready["lastTransitionTime"], "2026-11-25T10:00:00Z");
    assert_eq!(condition(&st.body, "Degraded")["status"], "False");
    assert_eq!(condition(&st.body, "MetricsReady")["status"], "True");
    let ev = calls.last().expect("event");
    assert_eq!(ev.body["reason"], "Reconciled");
    assert_eq!(ev.body["type"], "Normal");
    assert_eq!(ev.body["regarding"]["name"], "shop");
    assert_eq!(ev.body["reportingController"], "cello-operator");
}

#[tokio::test]
async fn steady_state_is_silent_and_keeps_transition_times() {
    let caps = Capabilities::default();
    // First pass, to learn the status the operator writes.
    let (_, first, _) = run(common::app(json!({})), caps, healthy(vec![])).await;
    let mut status = status_call(&first).body["status"].clone();
    for c in status["conditions"].as_array_mut().expect("conditions") {
        c["lastTransitionTime"] = json!("2026-01-01T00:00:00Z");
    }
    let mut app = common::app(json!({}));
    app.status = Some(serde_json::from_value(status).expect("status"));
    let (result, calls, _) = run(app, caps, healthy(vec![])).await;
    assert!(result.is_ok());
    let mut want = vec![
        apply_line("/api/v1/namespaces/prod/configmaps/shop-config"),
        apply_line("/api/v1/namespaces/prod/services/shop"),
        apply_line("/apis/apps/v1/namespaces/prod/deployments/shop"),
    ];
    want.extend(list_lines(caps));
    want.push(apply_line(STATUS_PATH));
    assert_eq!(lines(&calls), want, "no Event in steady state");
    let st = status_call(&calls);
    assert_eq!(
        condition(&st.body, "Ready")["lastTransitionTime"],
        "2026-01-01T00:00:00Z"
    );
}

fn owned(kind: &str, api_version: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": "prod",
                        "labels": {"app.kubernetes.io/managed-by": "cello-operator", "app.kubernetes.io/instance": "shop"},
                        "ownerReferences": [{"apiVersion": "cello.dev/v1alpha1", "kind": "CellApp", "name": "shop",
                                             "uid": uid, "controller": true}]}})
}

#[tokio::test]
async fn removed_consumer_is_deleted_and_foreign_objects_are_kept() {
    let caps = Capabilities::default();
    let existing = vec![
        ("deployments", owned("Deployment", "apps/v1", "shop", common::UID)),
        (
            "deployments",
            owned("Deployment", "apps/v1", "shop-fulfil", common::UID),
        ),
        (
            "deployments",
            owned("Deployment", "apps/v1", "shop-mailer", common::UID),
        ),
        // Same labels but another controller: never ours to delete.
        (
            "deployments",
            owned("Deployment", "apps/v1", "shop-legacy", "someone-else"),
        ),
    ];
    let app = common::app(json!({
        "queues": [{"name": "orders", "kind": "kafka", "topic": "o", "bootstrapServers": "k:9092"}],
        "consumers": [{"name": "fulfil", "queue": "orders", "handler": "shop.w:run"}],
    }));
    let (result, calls, _) = run(app, caps, healthy(existing)).await;
    assert!(result.is_ok(), "{result:?}");
    let deletes: Vec<&Call> = calls.iter().filter(|c| c.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{:?}", lines(&calls));
    assert_eq!(
        deletes[0].line(),
        "DELETE /apis/apps/v1/namespaces/prod/deployments/shop-mailer? application/json"
    );
    assert_eq!(deletes[0].body, json!({"propagationPolicy": "Background"}));
    // The delete follows the Deployment list it was found in.
    let list_at = calls
        .iter()
        .position(|c| c.line().starts_with("GET /apis/apps/v1/namespaces/prod/deployments?"))
        .expect("list");
    let delete_at = calls.iter().position(|c| c.method == "DELETE").expect("delete");
    assert_eq!(delete_at, list_at + 1);
    let st = status_call(&calls);
    assert_eq!(
        st.body["status"]["consumers"],
        json!([{"name": "fulfil", "readyReplicas": 1}])
    );
}

#[tokio::test]
async fn autoscaling_switch_drops_replicas_and_removes_the_old_autoscaler() {
    let caps = Capabilities::default();
    // none → hpa: the Deployment stops owning replicas and an HPA appears.
    let (_, calls, _) = run(
        common::app(json!({"autoscaling": {"mode": "hpa", "maxReplicas": 4}})),
        caps,
        healthy(vec![]),
    )
    .await;
    let dep = calls
        .iter()
        .find(|c| c.path().ends_with("/deployments/shop"))
        .expect("deployment");
    assert!(dep.body["spec"].get("replicas").is_none());
    let hpa = calls
        .iter()
        .find(|c| c.path().ends_with("/horizontalpodautoscalers/shop"))
        .expect("hpa applied");
    assert_eq!(
        hpa.line(),
        apply_line("/apis/autoscaling/v2/namespaces/prod/horizontalpodautoscalers/shop")
    );
    assert_eq!(hpa.body["spec"]["maxReplicas"], 4);
    assert_eq!(
        condition(&status_call(&calls).body, "AutoscalerReady")["reason"],
        "Reconciled"
    );

    // hpa → none: replicas come back and the HPA is deleted as an orphan.
    let existing = vec![(
        "horizontalpodautoscalers",
        owned("HorizontalPodAutoscaler", "autoscaling/v2", "shop", common::UID),
    )];
    let (_, calls, _) = run(common::app(json!({"replicas": 2})), caps, healthy(existing)).await;
    let dep = calls
        .iter()
        .find(|c| c.path().ends_with("/deployments/shop"))
        .expect("deployment");
    assert_eq!(dep.body["spec"]["replicas"], 2);
    let deletes: Vec<String> = calls.iter().filter(|c| c.method == "DELETE").map(Call::line).collect();
    assert_eq!(
        deletes,
        ["DELETE /apis/autoscaling/v2/namespaces/prod/horizontalpodautoscalers/shop? application/json"]
    );
}

#[tokio::test]
async fn switching_to_hpa_keeps_the_current_replicas_until_the_autoscaler_owns_them() {
    let mut live = owned("Deployment", "apps/v1", "shop", common::UID);
    live["spec"] = json!({"replicas": 3});
    live["metadata"]["managedFields"] = json!([{"manager": "cello-operator", "operation": "Apply",
        "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
    let app = common::app(json!({"autoscaling": {"mode": "hpa", "minReplicas": 2, "maxReplicas": 6}}));
    let (result, calls, _) = run(app, Capabilities::default(), healthy(vec![("deployments", live)])).await;
    assert!(result.is_ok(), "{result:?}");
    let dep: Vec<&Call> = calls
        .iter()
        .filter(|c| c.path().ends_with("/deployments/shop"))
        .collect();
    assert_eq!(
        dep.iter().map(|c| c.line()).collect::<Vec<_>>(),
        [
            "GET /apis/apps/v1/namespaces/prod/deployments/shop ".to_string(),
            format!(
                "PATCH /apis/apps/v1/namespaces/prod/deployments/shop?&fieldManager=cello-operator-handover {APPLY_CT}"
            ),
            apply_line("/apis/apps/v1/namespaces/prod/deployments/shop"),
        ]
    );
    // The hand-over holds the live count (3), not 1 and not minReplicas.
    assert_eq!(
        dep[1].body,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "shop", "namespace": "prod"}, "spec": {"replicas": 3}})
    );
    assert!(dep[2].body["spec"].get("replicas").is_none());

    // Once the autoscaler owns `replicas` (ours no longer lists it), no hand-over is made.
    let mut live = owned("Deployment", "apps/v1", "shop", common::UID);
    live["spec"] = json!({"replicas": 5});
    live["metadata"]["managedFields"] = json!([{"manager": "cello-operator", "operation": "Apply",
        "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {}}}}]);
    let app = common::app(json!({"autoscaling": {"mode": "hpa", "maxReplicas": 6}}));
    let (_, calls, _) = run(app, Capabilities::default(), healthy(vec![("deployments", live)])).await;
    assert!(
        !calls.iter().any(|c| c.uri.contains("cello-operator-handover")),
        "{:?}",
        lines(&calls)
    );
}

#[tokio::test]
async fn the_first_rollout_is_a_normal_event_not_a_warning() {
    let ok = healthy(vec![]);
    let respond: Responder = Box::new(move |c: &Call| {
        let (code, mut obj) = ok(c);
        if c.path().ends_with("/deployments/shop") {
            obj["status"] = json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 0, "updatedReplicas": 1});
        }
        (code, obj)
    });
    let (result, calls, _) = run(common::app(json!({})), Capabilities::default(), respond).await;
    assert!(result.is_ok(), "{result:?}");
    let ready = condition(&status_call(&calls).body, "Ready").clone();
    assert_eq!(ready["reason"], "RolloutInProgress");
    let ev = calls.last().expect("event");
    assert_eq!(
        (ev.body["type"].as_str(), ev.body["reason"].as_str()),
        (Some("Normal"), Some("RolloutInProgress"))
    );
}

#[tokio::test]
async fn a_server_that_rejects_pre_stop_sleep_switches_to_the_exec_fallback() {
    // What a 1.28 API server answers for an apply with `preStop.sleep`.
    let ok = healthy(vec![]);
    let respond: Responder = Box::new(move |c: &Call| {
        if c.path().ends_with("/deployments/shop") && c.body.to_string().contains("\"sleep\":{") {
            return (
                500,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 500,
                       "message": ".spec.template.spec.containers[0].lifecycle.preStop.sleep: field not declared in schema"}),
            );
        }
        ok(c)
    });
    let (result, calls, ctx) = run(common::app(json!({})), Capabilities::all(), respond).await;
    assert_eq!(result, Err("server_error".to_string()));
    let msg = condition(&status_call(&calls).body, "DeploymentAvailable")["message"].clone();
    assert_eq!(
        msg,
        "Deployment shop: .spec.template.spec.containers[0].lifecycle.preStop.sleep: field not declared in schema (HTTP 500)"
    );
    let caps = *ctx.capabilities.read().expect("caps");
    assert!(!caps.sleep_action, "the retry must not send preStop.sleep again");
    // The retry's Deployment carries the exec hook and is accepted.
    let plan = desired(&common::app(json!({})), &caps, &ReferencedData::new()).expect("plan");
    let dep = plan
        .children
        .iter()
        .find(|c| c.name == "shop" && c.kind == cello_operator::resources::Kind::Deployment);
    let hook = &dep.expect("deployment").object["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"];
    assert_eq!(hook, &json!({"exec": {"command": ["sleep", "5"]}}));
}

async fn failing(code: u16, api_reason: &'static str) -> (kube::Result<Action, String>, Vec<Call>, Arc<Context>) {
    let ok = healthy(vec![]);
    let respond: Responder = Box::new(move |c: &Call| {
        if c.method == "PATCH" && c.path().ends_with("/deployments/shop") {
            status_error(code, api_reason)
        } else {
            ok(c)
        }
    });
    // Replicas 2 and an ingress: a PDB and an Ingress come after the failing Deployment.
    let app = common::app(json!({"replicas": 2, "ingress": {"host": "shop.example.com"}}));
    run(app, Capabilities::default(), respond).await
}

#[tokio::test]
async fn a_refused_child_does_not_stop_the_others_and_reports_on_its_own_condition() {
    for (code, api_reason, label, condition_reason) in [
        (403, "Forbidden", "forbidden", "Forbidden"),
        (409, "Conflict", "conflict", "ApplyFailed"),
        // A server rejection of a child is not a bad spec.
        (422, "Invalid", "invalid", "ApplyFailed"),
    ] {
        let (result, calls, ctx) = failing(code, api_reason).await;
        assert_eq!(result, Err(label.to_string()), "{code}");
        let mut want = vec![
            apply_line("/api/v1/namespaces/prod/configmaps/shop-config"),
            apply_line("/api/v1/namespaces/prod/services/shop"),
            apply_line("/apis/apps/v1/namespaces/prod/deployments/shop"),
            apply_line("/apis/policy/v1/namespaces/prod/poddisruptionbudgets/shop"),
            apply_line("/apis/networking.k8s.io/v1/namespaces/prod/ingresses/shop"),
        ];
        want.extend(list_lines(Capabilities::default()));
        want.push(apply_line(STATUS_PATH));
        want.push(EVENTS.to_string());
        assert_eq!(
            lines(&calls),
            want,
            "{code}: later children and orphan cleanup still run"
        );
        let st = status_call(&calls);
        for t in ["Ready", "Degraded", "DeploymentAvailable"] {
            let c = condition(&st.body, t);
            assert_eq!(c["reason"], condition_reason, "{code} {t}");
        }
        assert_eq!(condition(&st.body, "DeploymentAvailable")["status"], "False");
        assert_eq!(condition(&st.body, "Degraded")["status"], "True");
        // The Service was applied: its condition is unaffected.
        assert_eq!(condition(&st.body, "ServiceReady")["reason"], "Reconciled");
        // A short human message: the API server's text, no Rust debug dump.
        let msg = condition(&st.body, "Degraded")["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(msg, format!("Deployment shop: mock {api_reason} (HTTP {code})"));
        let ev = calls.last().expect("event");
        assert_eq!(ev.body["type"], "Warning");
        assert_eq!(ev.body["reason"], condition_reason);
        assert_eq!(ev.body["note"], msg.as_str());
        assert!(!msg.contains("Status {") && !msg.contains("Some("), "{msg}");

        // The error policy backs off per object: 5 s, then 10 s.
        let app = Arc::new(common::app(json!({})));
        let err = cello_operator::Error::InvalidSpec("x".into());
        assert_eq!(
            error_policy(app.clone(), &err, ctx.clone()),
            Action::requeue(backoff(1))
        );
        assert_eq!(error_policy(app, &err, ctx.clone()), Action::requeue(backoff(2)));
        assert!(ctx
            .metrics
            .render()
            .contains("cello_operator_reconcile_failures_total{reason=\"invalid_spec\"} 2"));
    }
    assert_eq!(backoff(1).as_secs(), 5);
    assert_eq!(backoff(2).as_secs(), 10);
    assert_eq!(backoff(30).as_secs(), 300);
}

#[tokio::test]
async fn a_hand_edited_service_port_is_repaired_by_replacing_the_port_list() {
    // The live Service has a port someone edited by hand: the apply merges it with ours into a
    // duplicate port name (422) until the operator replaces the whole list.
    let replaced = Arc::new(Mutex::new(false));
    let seen = replaced.clone();
    let ok = healthy(vec![]);
    let respond: Responder = Box::new(move |c: &Call| {
        let svc = c.path().ends_with("/services/shop");
        if svc && c.content_type == "application/merge-patch+json" {
            *seen.lock().expect("flag") = true;
            return ok(c);
        }
        if svc && c.method == "PATCH" && !*seen.lock().expect("flag") {
            return status_error(422, "Invalid");
        }
        ok(c)
    });
    let (result, calls, _) = run(common::app(json!({})), Capabilities::default(), respond).await;
    assert!(result.is_ok(), "{result:?}");
    let svc: Vec<&Call> = calls.iter().filter(|c| c.path().ends_with("/services/shop")).collect();
    assert_eq!(
        svc.iter().map(|c| c.line()).collect::<Vec<_>>(),
        [
            apply_line("/api/v1/namespaces/prod/services/shop"),
            "PATCH /api/v1/namespaces/prod/services/shop?&fieldManager=cello-operator application/merge-patch+json"
                .to_string(),
            apply_line("/api/v1/namespaces/prod/services/shop"),
        ]
    );
    assert_eq!(
        svc[1].body,
        json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}})
    );
    let st = status_call(&calls);
    assert_eq!(condition(&st.body, "ServiceReady")["reason"], "Reconciled");
    assert_eq!(condition(&st.body, "Degraded")["status"], "False");
}

#[tokio::test]
async fn missing_optional_crds_make_no_calls_and_report_crd_not_installed() {
    let app = common::app(json!({
        "autoscaling": {"mode": "keda", "maxReplicas": 5},
        "queues": [{"name": "orders", "kind": "kafka", "topic": "o", "bootstrapServers": "k:9092"}],
        "ingress": {"host": "shop.example.com"},
        "tls": {"issuerRef": {"name": "letsencrypt"}},
        "metrics": {"monitor": "podMonitor"},
    }));
    let (result, calls, _) = run(app, Capabilities::default(), healthy(vec![])).await;
    assert!(result.is_ok(), "{result:?}");
    for c in &calls {
        for group in ["keda.sh", "cert-manager.io", "monitoring.coreos.com"] {
            assert!(!c.uri.contains(group), "call to a missing CRD: {}", c.line());
        }
    }
    let st = status_call(&calls);
    for t in ["AutoscalerReady", "CertificateReady", "MetricsReady"] {
        let c = condition(&st.body, t);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("CRDNotInstalled")),
            "{t}"
        );
    }
    let degraded = condition(&st.body, "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("CRDNotInstalled"))
    );
    // The app itself still serves.
    assert_eq!(condition(&st.body, "Ready")["status"], "True");
}

#[tokio::test]
async fn paused_app_only_gets_status() {
    let (result, calls, _) = run(
        common::app(json!({"operation": {"paused": true}})),
        Capabilities::all(),
        healthy(vec![]),
    )
    .await;
    assert_eq!(result, Ok(Action::await_change()));
    assert_eq!(lines(&calls), [apply_line(STATUS_PATH), EVENTS.to_string()]);
    let c = condition(&calls[0].body, "Paused");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("Paused"))
    );
}

#[tokio::test]
async fn invalid_server_config_reports_invalid_spec_and_waits_for_a_change() {
    let app = common::app(json!({"server": {"http2": {"maxFrameSize": 10}}}));
    let (result, calls, _) = run(app, Capabilities::all(), healthy(vec![])).await;
    assert_eq!(result, Ok(Action::await_change()));
    assert_eq!(lines(&calls), [apply_line(STATUS_PATH), EVENTS.to_string()]);
    let c = condition(&calls[0].body, "Ready");
    assert_eq!(c["reason"], "InvalidSpec");
    assert!(
        c["message"].as_str().unwrap_or_default().contains("http2.maxFrameSize"),
        "{c}"
    );
}

#[tokio::test]
async fn referenced_secret_is_read_and_folded_into_the_config_hash() {
    let spec =
        json!({"envVars": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]});
    let (result, calls, _) = run(common::app(spec.clone()), Capabilities::default(), healthy(vec![])).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(calls[0].line(), "GET /api/v1/namespaces/prod/secrets/db ");
    let digest = cello_operator::resources::data_digest([(&"password".to_string(), &b"hunter2"[..])]);
    let refs = ReferencedData::from([("secret/db".to_string(), digest)]);
    let plan = desired(&common::app(spec), &Capabilities::default(), &refs).expect("plan");
    let dep = calls
        .iter()
        .find(|c| c.path().ends_with("/deployments/shop"))
        .expect("deployment");
    assert_eq!(
        dep.body["spec"]["template"]["metadata"]["annotations"]["cello.dev/config-hash"],
        plan.config_hash.as_str()
    );
}

#[tokio::test]
async fn a_crd_removed_after_discovery_is_dropped_and_the_retry_reports_it() {
    let ok = healthy(vec![]);
    let respond: Responder = Box::new(move |c: &Call| {
        if c.method == "PATCH" && c.path().contains("/servicemonitors/") {
            status_error(404, "NotFound")
        } else {
            ok(c)
        }
    });
    let (result, calls, ctx) = run(common::app(json!({})), Capabilities::all(), respond).await;
    assert_eq!(result, Err("not_found".to_string()));
    assert_eq!(
        condition(&status_call(&calls).body, "Degraded")["reason"],
        "ApplyFailed"
    );
    let caps = *ctx.capabilities.read().expect("caps");
    assert_eq!(
        caps,
        Capabilities {
            service_monitor: false,
            ..Capabilities::all()
        }
    );
}

/// Reflector caches holding `objects` (as the controller's label-selected watches would).
fn caches(objects: &[Value]) -> Caches {
    use kube::runtime::{reflector, watcher};
    fn fill<K>(objects: &[Value], kind: &str) -> kube::runtime::reflector::Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
    {
        let (store, mut writer) = reflector::store::<K>();
        for o in objects.iter().filter(|o| o["kind"] == kind) {
            writer.apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(o.clone()).expect(kind)));
        }
        store
    }
    Caches {
        deployments: fill(objects, "Deployment"),
        services: fill(objects, "Service"),
        config_maps: fill(objects, "ConfigMap"),
        hpas: fill(objects, "HorizontalPodAutoscaler"),
        ingresses: fill(objects, "Ingress"),
        pdbs: fill(objects, "PodDisruptionBudget"),
    }
}

#[tokio::test]
async fn api_calls_per_reconcile_on_a_100_app_fixture_with_and_without_reflector_caches() {
    let caps = Capabilities::default();
    let apps: Vec<CellApp> = (0..100)
        .map(|i| common::app_named(&format!("app{i}"), json!({})))
        .collect();
    // Every app's children exist, plus one orphan of app0 (a removed consumer).
    let mut objects: Vec<Value> = apps
        .iter()
        .flat_map(|a| desired(a, &caps, &ReferencedData::new()).expect("plan").children)
        .map(|c| c.object)
        .collect();
    let mut orphan = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .cloned()
        .expect("deployment");
    orphan["metadata"]["name"] = json!("app0-mailer");
    objects.push(orphan);

    let mut figures = Vec::new();
    for cached in [false, true] {
        let mut total: Vec<Call> = Vec::new();
        for app in &apps {
            let (result, calls, _) =
                run_with(app.clone(), caps, healthy(vec![]), cached.then(|| caches(&objects))).await;
            assert!(result.is_ok(), "{result:?}");
            total.extend(calls);
        }
        let lists = total
            .iter()
            .filter(|c| c.method == "GET" && c.uri.contains("labelSelector"))
            .count();
        let deletes: Vec<String> = total.iter().filter(|c| c.method == "DELETE").map(Call::line).collect();
        figures.push((cached, total.len(), lists));
        eprintln!(
            "100 CellApps, caches {}: {} API calls ({:.1} per reconcile), {lists} LISTs",
            if cached { "on" } else { "off" },
            total.len(),
            total.len() as f64 / 100.0
        );
        if cached {
            // The orphan is found in the cache and deleted without any LIST.
            assert_eq!(
                deletes,
                ["DELETE /apis/apps/v1/namespaces/prod/deployments/app0-mailer? application/json"]
            );
        }
    }
    // Before: 3 applies + 6 LISTs + status + Event = 11 per reconcile; after: no LIST.
    assert_eq!(figures[0], (false, 1100, 600));
    assert_eq!(figures[1], (true, 501, 0));
}
