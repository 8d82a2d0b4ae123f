//! ServiceMonitor / PodMonitor (prometheus-operator). Scrape annotations are set on the pod
//! template instead when no monitor object is made (see `workload::pod_annotations`).

use serde_json::json;

use super::workload::{metrics_port_name, CONSUMER_ADMIN_PORT_NAME, CONSUMER_METRICS_PATH};
use super::{Child, Ctx, Kind, Skipped};
use crate::crd::MonitorKind;

pub(crate) fn monitor(ctx: &Ctx, children: &mut Vec<Child>, skipped: &mut Vec<Skipped>) {
    let Some(m) = ctx.metrics() else { return };
    match (m.monitor, ctx.monitor_kind()) {
        (MonitorKind::ServiceMonitor, None) => {
            skipped.push(Skipped {
                kind: Kind::ServiceMonitor,
                because: "metrics.monitor is serviceMonitor".into(),
            });
            return;
        }
        (MonitorKind::PodMonitor, None) => {
            skipped.push(Skipped {
                kind: Kind::PodMonitor,
                because: "metrics.monitor is podMonitor".into(),
            });
            return;
        }
        _ => {}
    }
    let Some(kind) = ctx.monitor_kind() else { return };
    let name = ctx.app_name();
    let mut meta = ctx.meta(name.clone(), "metrics");
    if let Some(labels) = meta.labels.as_mut() {
        // User labels first so the operator's own labels cannot be overridden.
        let mut merged = m.labels.clone();
        merged.extend(std::mem::take(labels));
        *labels = merged;
    }
    let endpoint = json!({"port": metrics_port_name(ctx), "path": m.path, "interval": m.interval});
    let selector = json!({"matchLabels": ctx.selector("app")});
    let object = match kind {
        Kind::PodMonitor => json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": meta,
            "spec": {"selector": selector, "podMetricsEndpoints": [endpoint]},
        }),
        _ => json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": meta,
            "spec": {"selector": selector, "endpoints": [endpoint]},
        }),
    };
    children.push(Child { kind, name, object });
    if ctx.consumer_pod_monitor() {
        let name = ctx.child_name("consumers");
        let mut meta = ctx.meta(name.clone(), "metrics");
        if let Some(labels) = meta.labels.as_mut() {
            let mut merged = m.labels.clone();
            merged.extend(std::mem::take(labels));
            *labels = merged;
        }
        let endpoint = json!({"port": CONSUMER_ADMIN_PORT_NAME, "path": CONSUMER_METRICS_PATH, "interval": m.interval});
        let object = json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": meta,
            "spec": {"selector": {"matchLabels": ctx.selector("consumer")}, "podMetricsEndpoints": [endpoint]},
        });
        children.push(Child {
            kind: Kind::PodMonitor,
            name,
            object,
        });
    }
}
