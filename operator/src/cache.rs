//! Reflector caches of the children the operator owns (kube-runtime stores fed by the same
//! label-selected watches that trigger reconciles), so that a reconcile finds orphans and
//! reads live children without LIST or GET calls. Optional kinds (KEDA, prometheus-operator,
//! cert-manager) are not cached: their CRDs may come and go, so they are listed by label, and
//! only when installed.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;

use crate::resources::{label_value, labels, Kind};

/// Stores of the owned core kinds.
#[derive(Clone)]
pub struct Caches {
    /// Deployments (app and consumers).
    pub deployments: Store<Deployment>,
    /// Services.
    pub services: Store<Service>,
    /// ConfigMaps carrying the operator's labels (`<app>-config`).
    pub config_maps: Store<ConfigMap>,
    /// HorizontalPodAutoscalers.
    pub hpas: Store<HorizontalPodAutoscaler>,
    /// Ingresses.
    pub ingresses: Store<Ingress>,
    /// PodDisruptionBudgets.
    pub pdbs: Store<PodDisruptionBudget>,
}

fn metas<K>(store: &Store<K>, ns: &str, instance: &str) -> Vec<ObjectMeta>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .map(|o| o.meta())
        .filter(|m| {
            m.namespace.as_deref() == Some(ns)
                && m.labels
                    .as_ref()
                    .and_then(|l| l.get(labels::INSTANCE))
                    .is_some_and(|v| *v == instance)
        })
        .cloned()
        .collect()
}

impl Caches {
    /// Metadata of the cached children of `kind` labelled for the app `app_name` in `ns`
    /// (the cache's watch already selects `managed-by=cello-operator`); `None` when the kind
    /// is not cached.
    pub fn children(&self, kind: Kind, ns: &str, app_name: &str) -> Option<Vec<ObjectMeta>> {
        let instance = label_value(app_name);
        Some(match kind {
            Kind::Deployment => metas(&self.deployments, ns, &instance),
            Kind::Service => metas(&self.services, ns, &instance),
            Kind::ConfigMap => metas(&self.config_maps, ns, &instance),
            Kind::HorizontalPodAutoscaler => metas(&self.hpas, ns, &instance),
            Kind::Ingress => metas(&self.ingresses, ns, &instance),
            Kind::PodDisruptionBudget => metas(&self.pdbs, ns, &instance),
            _ => return None,
        })
    }

    /// The cached Deployment `name` in `ns`.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Deployment> {
        self.deployments
            .get(&ObjectRef::new(name).within(ns))
            .map(|d| d.as_ref().clone())
    }
}
