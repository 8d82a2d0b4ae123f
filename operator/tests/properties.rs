//! Property tests of the pure builder: names, labels, selectors, replicas, config hash.

mod common;

use cello_operator::resources::{config_hash, data_digest, desired, dns_name, Capabilities, Kind, ReferencedData};
use proptest::prelude::*;
use serde_json::{json, Value};

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// CellApp names are DNS-1123 subdomains: up to 253 characters of `[a-z0-9.-]`.
fn app_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]([a-z0-9-]{0,20}[a-z0-9])?",
        "[a-z0-9]([a-z0-9.-]{0,120}[a-z0-9])?",
        "[a-z0-9]{60,70}",
        "[0-9][a-z0-9-]{0,10}[a-z0-9]",
    ]
}

fn consumer_name() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,30}[a-z0-9])?"
}

#[derive(Debug, Clone)]
enum Scaling {
    None,
    Hpa,
    Keda,
}

fn scaling() -> impl Strategy<Value = Scaling> {
    prop_oneof![Just(Scaling::None), Just(Scaling::Hpa), Just(Scaling::Keda)]
}

fn spec(consumers: &[String], scaling: &Scaling, replicas: Option<i32>, stopped: bool) -> Value {
    let mut s = json!({
        "queues": [{"name": "orders", "kind": "kafka", "topic": "o", "bootstrapServers": "k:9092"}],
        "consumers": consumers.iter().map(|c| json!({"name": c, "queue": "orders", "handler": "a.b:c"})).collect::<Vec<_>>(),
        "operation": {"stopped": stopped},
    });
    match scaling {
        Scaling::None => {
            if let Some(r) = replicas {
                s["replicas"] = json!(r);
            }
        }
        Scaling::Hpa => s["autoscaling"] = json!({"mode": "hpa", "minReplicas": 1, "maxReplicas": 5}),
        Scaling::Keda => s["autoscaling"] = json!({"mode": "keda", "minReplicas": 0, "maxReplicas": 5}),
    }
    s
}

fn caps(keda: bool) -> Capabilities {
    Capabilities {
        keda,
        ..Capabilities::all()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn names_are_dns_labels_and_labels_are_valid(
        name in app_name(),
        consumers in proptest::collection::btree_set(consumer_name(), 0..4),
        scaling in scaling(),
        keda in any::<bool>(),
    ) {
        let consumers: Vec<String> = consumers.into_iter().collect();
        let app = common::app_named(&name, spec(&consumers, &scaling, None, false));
        let d = desired(&app, &caps(keda), &ReferencedData::new()).expect("desired");
        let mut seen = std::collections::BTreeSet::new();
        for c in &d.children {
            prop_assert!(is_dns_label(&c.name), "child name {:?} of {:?}", c.name, name);
            prop_assert_eq!(c.object["metadata"]["name"].as_str(), Some(c.name.as_str()));
            prop_assert!(seen.insert((c.kind, c.name.clone())), "duplicate child {:?}", c.name);
            let labels = c.object["metadata"]["labels"].as_object().expect("labels");
            for v in labels.values() {
                prop_assert!(is_label_value(v.as_str().unwrap_or("!")), "label value {:?}", v);
            }
        }
    }

    #[test]
    fn selectors_depend_on_names_only(
        name in app_name(),
        consumers in proptest::collection::btree_set(consumer_name(), 1..3),
        a in (scaling(), proptest::option::of(0..10i32), any::<bool>()),
        b in (scaling(), proptest::option::of(0..10i32), any::<bool>()),
    ) {
        let consumers: Vec<String> = consumers.into_iter().collect();
        let da = desired(&common::app_named(&name, spec(&consumers, &a.0, a.1, a.2)), &caps(true), &ReferencedData::new()).expect("a");
        let mut other = spec(&consumers, &b.0, b.1, b.2);
        other["image"] = json!("ghcr.io/acme/other:9");
        other["podTemplate"] = json!({"labels": {"team": "x"}});
        let db = desired(&common::app_named(&name, other), &caps(true), &ReferencedData::new()).expect("b");
        prop_assert_eq!(&da.selector, &db.selector);
        for dep in da.children.iter().filter(|c| c.kind == Kind::Deployment) {
            let twin = db.children.iter().find(|c| c.kind == Kind::Deployment && c.name == dep.name).expect("same Deployments");
            prop_assert_eq!(&dep.object["spec"]["selector"], &twin.object["spec"]["selector"]);
            // The selector matches the pod labels (else the API server rejects the Deployment).
            let pod_labels = &dep.object["spec"]["template"]["metadata"]["labels"];
            for (k, v) in dep.object["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels") {
                prop_assert_eq!(&pod_labels[k], v);
            }
        }
    }

    #[test]
    fn replicas_absent_exactly_when_autoscaling(
        consumers in proptest::collection::btree_set(consumer_name(), 0..3),
        scaling in scaling(),
        replicas in proptest::option::of(0..20i32),
        keda in any::<bool>(),
        stopped in any::<bool>(),
    ) {
        let consumers: Vec<String> = consumers.into_iter().collect();
        let app = common::app(spec(&consumers, &scaling, replicas, stopped));
        let d = desired(&app, &caps(keda), &ReferencedData::new()).expect("desired");
        let autoscaled = !stopped && match scaling { Scaling::None => false, Scaling::Hpa => true, Scaling::Keda => keda };
        let main = d.children.iter().find(|c| c.kind == Kind::Deployment && c.name == "shop").expect("app Deployment");
        prop_assert_eq!(main.object["spec"].get("replicas").is_none(), autoscaled);
        if stopped {
            prop_assert_eq!(&main.object["spec"]["replicas"], &json!(0));
        }
        let has_autoscaler = d.children.iter().any(|c| matches!(c.kind, Kind::HorizontalPodAutoscaler | Kind::ScaledObject));
        prop_assert_eq!(has_autoscaler, autoscaled);
        let keda_on = !stopped && keda && matches!(scaling, Scaling::Keda);
        for c in d.children.iter().filter(|c| c.kind == Kind::Deployment && c.name != "shop") {
            prop_assert_eq!(c.object["spec"].get("replicas").is_none(), keda_on);
        }
    }

    #[test]
    fn config_hash_is_deterministic(
        yaml in ".{0,200}",
        refs in proptest::collection::btree_map("(secret|configmap)/[a-z]{1,8}", "[0-9a-f]{8}", 0..5),
    ) {
        let refs: ReferencedData = refs;
        prop_assert_eq!(config_hash(&yaml, Some(&refs)), config_hash(&yaml, Some(&refs)));
        let mut changed = refs.clone();
        changed.insert("secret/zzzzzzzzz".into(), "1".into());
        prop_assert_ne!(config_hash(&yaml, Some(&refs)), config_hash(&yaml, Some(&changed)));
        let a = common::app(json!({}));
        let one = desired(&a, &Capabilities::all(), &refs).expect("one");
        let two = desired(&a, &Capabilities::all(), &refs).expect("two");
        prop_assert_eq!(one, two);
    }

    #[test]
    fn data_digest_ignores_order(map in proptest::collection::btree_map("[a-z]{1,6}", proptest::collection::vec(any::<u8>(), 0..16), 0..6)) {
        let forward: Vec<(&String, &[u8])> = map.iter().map(|(k, v)| (k, v.as_slice())).collect();
        let mut backward = forward.clone();
        backward.reverse();
        prop_assert_eq!(data_digest(forward.clone()), data_digest(backward));
        if let Some((k, _)) = forward.first() {
            // Changing one value changes the digest.
            let changed: Vec<(&String, &[u8])> = forward.iter().map(|(k2, v)| if k2 == k { (*k2, &b"x!"[..]) } else { (*k2, *v) }).collect();
            if map[*k].as_slice() != b"x!" {
                prop_assert_ne!(data_digest(forward.clone()), data_digest(changed));
            }
        }
    }

    #[test]
    fn dns_name_is_injective_enough(a in "[a-z0-9.-]{1,120}", b in "[a-z0-9.-]{1,120}") {
        prop_assert!(is_dns_label(&dns_name(&a)));
        if a != b {
            prop_assert_ne!(dns_name(&a), dns_name(&b));
        }
    }
}
