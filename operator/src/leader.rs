//! Optional leader election on a `coordination.k8s.io/v1` Lease (off by default), so that more
//! than one operator replica can run with only one reconciling.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;

use crate::Result;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub duration: Duration,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// One round: take the Lease if it is free, expired or ours, else leave it.
/// Returns whether this replica holds the Lease afterwards.
pub async fn try_acquire_or_renew(client: &Client, s: &LeaseSettings, now: Timestamp) -> Result<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.identity.clone()),
                lease_duration_seconds: Some(secs(s.duration)),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let ours = spec.holder_identity.as_deref() == Some(s.identity.as_str());
    // A released Lease (no holder) is free at once: that is what makes failover fast.
    let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
    let valid_for = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(secs(s.duration))));
    let expired = free || spec.renew_time.as_ref().is_none_or(|t| t.0 + valid_for < now);
    if !ours && !expired {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(s.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(secs(s.duration));
    // `replace` carries the resourceVersion we read: a concurrent writer makes it fail with 409.
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Give the Lease up (on SIGTERM), so another replica takes over at once instead of waiting
/// for it to expire. Does nothing when another replica holds it.
pub async fn release(client: &Client, s: &LeaseSettings, now: Timestamp) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(now));
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        // Someone else wrote it meanwhile: it is not ours to release any more.
        Err(e) if !is_conflict(&e) => Err(e.into()),
        _ => Ok(()),
    }
}

/// Wait until this replica holds the Lease (retrying every `duration / 3`).
pub async fn acquire(client: &Client, s: &LeaseSettings) {
    loop {
        match try_acquire_or_renew(client, s, Timestamp::now()).await {
            Ok(true) => return,
            Ok(false) => tracing::info!(lease = %s.name, "another replica leads; waiting"),
            Err(e) => tracing::warn!(lease = %s.name, error = %e, "leader election failed; retrying"),
        }
        tokio::time::sleep(s.duration / 3).await;
    }
}

/// Keep renewing; returns when leadership is lost (the caller then stops reconciling).
pub async fn hold(client: &Client, s: &LeaseSettings) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(s.duration / 3).await;
        match try_acquire_or_renew(client, s, Timestamp::now()).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(lease = %s.name, error = %e, "lease renewal failed");
                if last_ok.elapsed() >= s.duration {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{json, Value};

    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings {
            namespace: "cello-system".into(),
            name: "cello-operator".into(),
            identity: "pod-a".into(),
            duration: Duration::from_secs(15),
        }
    }

    fn lease(holder: &str, renew: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "cello-operator", "namespace": "cello-system", "resourceVersion": "41"},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew,
                        "acquireTime": renew, "leaseTransitions": 2}})
    }

    enum Action {
        Acquire,
        Release,
    }

    async fn round(existing: Option<Value>, write_code: u16) -> (bool, Vec<(String, String, Value)>) {
        call(existing, write_code, Action::Acquire).await
    }

    /// Runs one round against a mock API server; returns (held, [(method, path, body)]).
    async fn call(existing: Option<Value>, write_code: u16, action: Action) -> (bool, Vec<(String, String, Value)>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let server = tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.expect("body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("json")
                };
                let method = parts.method.to_string();
                let (code, reply) = match (method.as_str(), &existing) {
                    ("GET", Some(l)) => (200, l.clone()),
                    ("GET", None) => (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                                  "reason": "NotFound", "code": 404}),
                    ),
                    _ if write_code == 409 => (
                        409,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                           "status": "Failure", "reason": "Conflict", "code": 409}),
                    ),
                    _ => (200, body.clone()),
                };
                seen.lock()
                    .expect("calls")
                    .push((method, parts.uri.path().to_string(), body));
                let resp = Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).expect("reply")));
                send.send_response(resp.expect("response"));
            }
        });
        let client = Client::new(service, "default");
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().expect("now");
        let held = match action {
            Action::Acquire => try_acquire_or_renew(&client, &settings(), now).await.expect("round"),
            Action::Release => {
                release(&client, &settings(), now).await.expect("release");
                false
            }
        };
        server.abort();
        let calls = calls.lock().expect("calls").clone();
        for (m, p, _) in &calls {
            let (g, r, v) = crate::rbac::classify(m, p, "").expect("classify");
            assert!(crate::rbac::allowed_by(crate::rbac::LEADER_RULES, &g, &r, v));
        }
        (held, calls)
    }

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/cello-system/leases";

    #[tokio::test]
    async fn creates_a_missing_lease() {
        let (held, calls) = round(None, 200).await;
        assert!(held);
        assert_eq!(calls[1].0, "POST");
        assert_eq!(calls[1].1, PATH);
        assert_eq!(calls[1].2["spec"]["holderIdentity"], "pod-a");
        assert_eq!(calls[1].2["spec"]["leaseDurationSeconds"], 15);
    }

    #[tokio::test]
    async fn leaves_a_fresh_lease_of_another_replica_alone() {
        let (held, calls) = round(Some(lease("pod-b", "2026-11-25T09:59:55.000000Z")), 200).await;
        assert!(!held);
        assert_eq!(calls.len(), 1, "only the GET");
    }

    #[tokio::test]
    async fn takes_over_an_expired_lease_with_optimistic_concurrency() {
        let (held, calls) = round(Some(lease("pod-b", "2026-11-25T09:59:00.000000Z")), 200).await;
        assert!(held);
        let (m, p, body) = &calls[1];
        assert_eq!(
            (m.as_str(), p.as_str()),
            ("PUT", format!("{PATH}/cello-operator").as_str())
        );
        assert_eq!(body["metadata"]["resourceVersion"], "41");
        assert_eq!(body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(body["spec"]["leaseTransitions"], 3);
        // Another replica won the race: not ours.
        let (held, _) = round(Some(lease("pod-b", "2026-11-25T09:59:00.000000Z")), 409).await;
        assert!(!held);
    }

    #[tokio::test]
    async fn renews_its_own_lease() {
        let (held, calls) = round(Some(lease("pod-a", "2026-11-25T09:59:58.000000Z")), 200).await;
        assert!(held);
        assert_eq!(
            calls[1].2["spec"]["leaseTransitions"], 2,
            "a renewal is not a transition"
        );
        assert_eq!(calls[1].2["spec"]["renewTime"], "2026-11-25T10:00:00.000000Z");
    }

    #[tokio::test]
    async fn releases_its_lease_on_shutdown_so_a_follower_takes_over_at_once() {
        let (_, calls) = call(
            Some(lease("pod-a", "2026-11-25T09:59:58.000000Z")),
            200,
            Action::Release,
        )
        .await;
        let (m, p, body) = &calls[1];
        assert_eq!(
            (m.as_str(), p.as_str()),
            ("PUT", format!("{PATH}/cello-operator").as_str())
        );
        assert!(body["spec"].get("holderIdentity").is_none(), "{body}");
        assert_eq!(body["metadata"]["resourceVersion"], "41");
        // Another replica's Lease is left alone.
        let (_, calls) = call(
            Some(lease("pod-b", "2026-11-25T09:59:58.000000Z")),
            200,
            Action::Release,
        )
        .await;
        assert_eq!(calls.len(), 1, "only the GET");
        // A released Lease renewed a second ago is free for the next replica now, not in 15 s.
        let mut released = lease("pod-a", "2026-11-25T09:59:59.000000Z");
        released["spec"].as_object_mut().expect("spec").remove("holderIdentity");
        released["spec"]["leaseDurationSeconds"] = json!(1);
        let (held, calls) = call(Some(released), 200, Action::Acquire).await;
        assert!(held, "{calls:?}");
        assert_eq!(calls[1].2["spec"]["holderIdentity"], "pod-a");
    }
}
