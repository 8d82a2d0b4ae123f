//! Service, Ingress and the cert-manager Certificate.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::workload::service_metrics_port;
use super::{to_value, Child, Ctx, Kind, Skipped};
use crate::crd::{IssuerKind, ServiceType, TlsTermination};
use crate::Result;

fn service_port(ctx: &Ctx) -> i32 {
    ctx.app.spec.service.as_ref().and_then(|s| s.port).unwrap_or(80)
}

fn ingress_tls(ctx: &Ctx) -> bool {
    ctx.app
        .spec
        .tls
        .as_ref()
        .is_some_and(|t| t.termination == TlsTermination::Ingress)
}

fn pod_tls(ctx: &Ctx) -> bool {
    ctx.app
        .spec
        .tls
        .as_ref()
        .is_some_and(|t| t.termination == TlsTermination::Pod)
}

/// The Secret holding the app's certificate: the named one, or the one cert-manager fills.
fn tls_secret(ctx: &Ctx) -> Option<String> {
    let tls = ctx.app.spec.tls.as_ref()?;
    Some(tls.secret_name.clone().unwrap_or_else(|| ctx.child_name("tls")))
}

pub(crate) fn url(ctx: &Ctx) -> String {
    if let Some(ing) = &ctx.app.spec.ingress {
        let scheme = if ingress_tls(ctx) { "https" } else { "http" };
        return format!("{scheme}://{}{}", ing.host, ing.path);
    }
    let scheme = if pod_tls(ctx) { "https" } else { "http" };
    format!(
        "{scheme}://{}.{}.svc:{}",
        ctx.app_name(),
        ctx.namespace,
        service_port(ctx)
    )
}

pub(crate) fn service(ctx: &Ctx) -> Result<Value> {
    let spec = ctx.app.spec.service.clone().unwrap_or_default();
    let mut ports = vec![ServicePort {
        name: Some("http".into()),
        port: service_port(ctx),
        target_port: Some(IntOrString::String("http".into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }];
    if let Some(p) = service_metrics_port(ctx) {
        ports.push(ServicePort {
            name: Some("metrics".into()),
            port: p,
            target_port: Some(IntOrString::String("metrics".into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        });
    }
    let type_ = match spec.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let mut meta = ctx.meta(ctx.app_name(), "app");
    meta.annotations = (!spec.annotations.is_empty()).then_some(spec.annotations);
    let svc = Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(ctx.selector("app")),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    to_value("Service", &svc)
}

pub(crate) fn ingress(ctx: &Ctx) -> Result<Option<Value>> {
    let Some(spec) = ctx.app.spec.ingress.clone() else {
        return Ok(None);
    };
    let tls = if ingress_tls(ctx) {
        tls_secret(ctx).map(|s| {
            vec![IngressTLS {
                hosts: Some(vec![spec.host.clone()]),
                secret_name: Some(s),
            }]
        })
    } else {
        None
    };
    let mut meta = ctx.meta(ctx.app_name(), "app");
    meta.annotations = (!spec.annotations.is_empty()).then_some(spec.annotations);
    let ing = Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name,
            rules: Some(vec![IngressRule {
                host: Some(spec.host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(spec.path),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: ctx.app_name(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            tls,
            default_backend: None,
        }),
        status: None,
    };
    to_value("Ingress", &ing).map(Some)
}

/// A cert-manager Certificate for `tls.issuerRef`, when the CRD exists.
pub(crate) fn certificate(ctx: &Ctx, children: &mut Vec<Child>, skipped: &mut Vec<Skipped>) {
    let Some(tls) = &ctx.app.spec.tls else { return };
    let Some(issuer) = &tls.issuer_ref else { return };
    if !ctx.caps.certificate {
        skipped.push(Skipped {
            kind: Kind::Certificate,
            because: "tls.issuerRef is set".into(),
        });
        return;
    }
    let svc = ctx.app_name();
    let dns_names: Vec<String> = match (&ctx.app.spec.ingress, tls.termination) {
        (Some(ing), TlsTermination::Ingress) => vec![ing.host.clone()],
        _ => vec![
            svc.clone(),
            format!("{svc}.{}.svc", ctx.namespace),
            format!("{svc}.{}.svc.cluster.local", ctx.namespace),
        ],
    };
    let name = ctx.child_name("tls");
    let kind = match issuer.kind {
        IssuerKind::Issuer => "Issuer",
        IssuerKind::ClusterIssuer => "ClusterIssuer",
    };
    let object = json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": ctx.meta(name.clone(), "tls"),
        "spec": {
            "secretName": name,
            "dnsNames": dns_names,
            "issuerRef": {"name": issuer.name, "kind": kind, "group": issuer.group},
        },
    });
    children.push(Child {
        kind: Kind::Certificate,
        name,
        object,
    });
}
