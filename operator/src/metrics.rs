//! Operator metrics (Prometheus text format): reconciles, failures by reason, reconcile
//! duration, and apps by readiness.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabel {
    ready: String,
}

/// The operator's metrics registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<ReasonLabel, Counter>,
    duration: Histogram,
    apps: Family<ReadyLabel, Gauge>,
    readiness: Mutex<HashMap<String, bool>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cello_operator");
        let reconciles = Counter::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let apps = Family::<ReadyLabel, Gauge>::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciliations by reason",
            failures.clone(),
        );
        registry.register("reconcile_duration_seconds", "Reconcile duration", duration.clone());
        registry.register("apps", "CellApps by readiness", apps.clone());
        Self {
            registry,
            reconciles,
            failures,
            duration,
            apps,
            readiness: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Count one reconcile and its duration.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Count one failure with a stable reason label.
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabel { reason: reason.into() })
            .inc();
    }

    /// Record an app's readiness (keyed `namespace/name`).
    pub fn set_ready(&self, app: &str, ready: bool) {
        let Ok(mut map) = self.readiness.lock() else { return };
        map.insert(app.to_string(), ready);
        let n_ready = map.values().filter(|r| **r).count() as i64;
        self.apps
            .get_or_create(&ReadyLabel { ready: "true".into() })
            .set(n_ready);
        self.apps
            .get_or_create(&ReadyLabel { ready: "false".into() })
            .set(map.len() as i64 - n_ready);
    }

    /// Forget a deleted app.
    pub fn forget(&self, app: &str) {
        if let Ok(mut map) = self.readiness.lock() {
            map.remove(app);
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_reason() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(20));
        m.failure("forbidden");
        m.failure("forbidden");
        m.set_ready("prod/shop", true);
        m.set_ready("prod/cart", false);
        let text = m.render();
        assert!(text.contains("cello_operator_reconciles_total 1"), "{text}");
        assert!(
            text.contains("cello_operator_reconcile_failures_total{reason=\"forbidden\"} 2"),
            "{text}"
        );
        assert!(text.contains("cello_operator_apps{ready=\"true\"} 1"), "{text}");
        assert!(text.contains("cello_operator_apps{ready=\"false\"} 1"), "{text}");
        assert!(
            text.contains("cello_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }
}
