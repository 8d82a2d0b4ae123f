//! ConfigMap, app Deployment (embedded and sidecar) and consumer Deployments.

use std::collections::BTreeMap;

use cello_config::ServerConfig;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities as LinuxCaps, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, SeccompProfile, SecretVolumeSource, SecurityContext, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::queues::all_queue_env;
use super::{
    labels, to_value, Ctx, CONFIG_DIR, CONFIG_HASH_ANNOTATION, DEFAULT_DATAPLANE_IMAGE, PRE_STOP_SLEEP_SECONDS,
};
use crate::crd::{AppEnv, AutoscalingMode, CellApp, ConsumerSpec, Mode, ProbeSpec, PullPolicy, TlsTermination};
use crate::{Error, Result};

const TLS_DIR: &str = "/etc/cello/tls";

/// The admin port of `cello consume` (`--admin-port`; its default in `cello.cli` too):
/// `/health/live`, `/health/ready` and `/metrics`, plain HTTP on all interfaces.
pub const CONSUMER_ADMIN_PORT: i32 = 8081;
/// Name of the consumer container's admin port (probes, PodMonitor).
pub const CONSUMER_ADMIN_PORT_NAME: &str = "admin";
/// Where `cello consume` serves its metrics (fixed; `spec.metrics.path` is the app's).
pub const CONSUMER_METRICS_PATH: &str = "/metrics";

/// `spec.server` as the pod reads it: listening on all interfaces on `spec.port`, debug in
/// development, and validated with the data plane's own `validate()`.
pub(crate) fn server_config(app: &CellApp, caps: &super::Capabilities) -> Result<ServerConfig> {
    let mut cfg = app.spec.server.clone();
    if app.spec.mode == Mode::Sidecar && !caps.sleep_action {
        // No preStop sleep before Kubernetes 1.30 and no `sleep` binary in the data plane image:
        // the data plane keeps serving (with /ready failing) for as long after SIGTERM instead.
        cfg.health.drain_delay_secs = cfg.health.drain_delay_secs.max(PRE_STOP_SLEEP_SECONDS as f64);
    }
    cfg.host = "0.0.0.0".into();
    cfg.port = u16::try_from(app.spec.port).map_err(|_| Error::InvalidSpec(format!("port {}", app.spec.port)))?;
    // What the pod is probed and scraped on must be served: the probes and the scrape target
    // (annotations or monitor) are derived from the same spec, so turn the endpoints on here.
    let metrics = app.spec.metrics.clone().unwrap_or_default();
    if metrics.enabled {
        if metrics.port.is_some_and(|p| p != app.spec.port) {
            return Err(Error::InvalidSpec(format!(
                "metrics.port {}: the data plane serves metrics on the app port ({}) only; a separate metrics port is not supported yet",
                metrics.port.unwrap_or_default(),
                app.spec.port
            )));
        }
        cfg.prometheus.enabled = true;
        cfg.prometheus.endpoint = metrics.path.clone();
    }
    let probes = app.spec.probes.clone().unwrap_or_default();
    let default_probe = [&probes.liveness, &probes.readiness, &probes.startup]
        .into_iter()
        .any(|p| p.as_ref().is_none_or(|p| p.disabled != Some(true) && p.path.is_none()));
    if default_probe {
        cfg.health.enabled = true;
    }
    cfg.debug |= app.spec.env == AppEnv::Development;
    cfg.validate().map_err(Error::InvalidServerConfig)?;
    Ok(cfg)
}

pub(crate) fn config_map(ctx: &Ctx) -> Result<Value> {
    let cm = ConfigMap {
        metadata: ctx.meta(ctx.child_name("config"), "config"),
        data: Some(BTreeMap::from([("cello.yaml".to_string(), ctx.cello_yaml.clone())])),
        ..ConfigMap::default()
    };
    to_value("ConfigMap", &cm)
}

fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(LinuxCaps {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

fn restricted_pod(ctx: &Ctx) -> PodSecurityContext {
    let user = ctx
        .app
        .spec
        .pod_template
        .as_ref()
        .and_then(|p| p.security_context.clone());
    user.unwrap_or_else(|| PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    })
}

fn pod_tls(ctx: &Ctx) -> Option<String> {
    let tls = ctx.app.spec.tls.as_ref()?;
    (tls.termination == TlsTermination::Pod).then(|| tls.secret_name.clone().unwrap_or_else(|| ctx.child_name("tls")))
}

fn grace(ctx: &Ctx) -> i64 {
    ctx.app
        .spec
        .rollout
        .as_ref()
        .map_or(30, |r| r.termination_grace_period_seconds)
}

fn plain(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The data plane's env: config path, environment, and a drain budget that fits inside the
/// grace period after the preStop sleep.
fn base_env(ctx: &Ctx) -> Vec<EnvVar> {
    let env = match ctx.app.spec.env {
        AppEnv::Development => "development",
        AppEnv::Production => "production",
    };
    let drain = (grace(ctx) - PRE_STOP_SLEEP_SECONDS - 1).max(1);
    let mut out = vec![
        plain(cello_config::env::CONFIG, format!("{CONFIG_DIR}/cello.yaml")),
        plain(cello_config::env::ENV, env),
        plain(cello_config::env::SHUTDOWN_TIMEOUT, drain.to_string()),
        // The same budget under the name `cello run` reads (the data plane reads the one above).
        plain(cello_config::env::TIMEOUT_GRACEFUL_SHUTDOWN, drain.to_string()),
    ];
    if pod_tls(ctx).is_some() {
        out.push(plain(cello_config::env::TLS_CERT_FILE, format!("{TLS_DIR}/tls.crt")));
        out.push(plain(cello_config::env::TLS_KEY_FILE, format!("{TLS_DIR}/tls.key")));
    }
    out
}

/// Ours first, then the user's; a user variable replaces ours of the same name.
fn with_user_env(ours: Vec<EnvVar>, user: &[EnvVar]) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = ours
        .into_iter()
        .filter(|e| !user.iter().any(|u| u.name == e.name))
        .collect();
    out.extend(user.iter().cloned());
    out
}

fn mounts(ctx: &Ctx) -> Vec<VolumeMount> {
    let mut m = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        // The root filesystem is read-only; Python and the data plane still need a scratch dir.
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    if pod_tls(ctx).is_some() {
        m.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    m
}

fn volumes(ctx: &Ctx) -> Vec<Volume> {
    let mut v = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ctx.child_name("config"),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    if let Some(secret) = pod_tls(ctx) {
        v.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    v
}

fn probe(ctx: &Ctx, spec: Option<&ProbeSpec>, default_path: &str, startup: bool) -> Option<Probe> {
    let spec = spec.cloned().unwrap_or_default();
    if spec.disabled == Some(true) {
        return None;
    }
    let scheme = pod_tls(ctx).map(|_| "HTTPS".to_string());
    Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some(spec.path.unwrap_or_else(|| default_path.into())),
            port: IntOrString::String("http".into()),
            scheme,
            ..HTTPGetAction::default()
        }),
        period_seconds: spec.period_seconds.or(Some(if startup { 2 } else { 10 })),
        timeout_seconds: spec.timeout_seconds,
        failure_threshold: spec.failure_threshold.or(Some(if startup { 30 } else { 3 })),
        initial_delay_seconds: spec.initial_delay_seconds,
        ..Probe::default()
    })
}

/// A probe of the consumer's admin port.
fn admin_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(CONSUMER_ADMIN_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Default probe path: the data plane's health endpoints under `spec.server.health.basePath`.
fn health_path(ctx: &Ctx, probe: &str) -> String {
    format!("{}/{probe}", ctx.app.spec.server.health.base_path.trim_end_matches('/'))
}

fn metrics_port(ctx: &Ctx) -> Option<i32> {
    ctx.metrics().and_then(|m| m.port).filter(|p| *p != ctx.app.spec.port)
}

/// Endpoints are removed asynchronously: keep serving briefly before the drain starts. The
/// `sleep` action needs Kubernetes 1.30+; before, an exec `sleep` (the app image has one), and
/// the data plane (no shell tools in its image) uses its drain delay instead (`server_config`).
fn pre_stop(ctx: &Ctx, container: &str) -> Option<Lifecycle> {
    let handler = if ctx.caps.sleep_action {
        LifecycleHandler {
            sleep: Some(SleepAction {
                seconds: PRE_STOP_SLEEP_SECONDS,
            }),
            ..LifecycleHandler::default()
        }
    } else if container == "cello-dataplane" {
        return None;
    } else {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["sleep".into(), PRE_STOP_SLEEP_SECONDS.to_string()]),
            }),
            ..LifecycleHandler::default()
        }
    };
    Some(Lifecycle {
        pre_stop: Some(handler),
        ..Lifecycle::default()
    })
}

/// The serving container: `cello run` (embedded) or `cello-dataplane` (sidecar).
fn serving_container(ctx: &Ctx, name: &str, image: String, command: Vec<String>, args: Vec<String>) -> Container {
    let spec = &ctx.app.spec;
    let probes = spec.probes.clone().unwrap_or_default();
    let mut ports = vec![ContainerPort {
        name: Some("http".into()),
        container_port: spec.port,
        ..ContainerPort::default()
    }];
    if let Some(p) = metrics_port(ctx) {
        ports.push(ContainerPort {
            name: Some("metrics".into()),
            container_port: p,
            ..ContainerPort::default()
        });
    }
    Container {
        name: name.into(),
        image: Some(image),
        image_pull_policy: spec.image_pull_policy.map(pull_policy),
        command: Some(command),
        args: Some(args),
        ports: Some(ports),
        liveness_probe: probe(ctx, probes.liveness.as_ref(), &health_path(ctx, "live"), false),
        readiness_probe: probe(ctx, probes.readiness.as_ref(), &health_path(ctx, "ready"), false),
        startup_probe: probe(ctx, probes.startup.as_ref(), &health_path(ctx, "startup"), true),
        lifecycle: pre_stop(ctx, name),
        volume_mounts: Some(mounts(ctx)),
        security_context: Some(restricted_container()),
        ..Container::default()
    }
}

fn pull_policy(p: PullPolicy) -> String {
    match p {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
    .into()
}

fn containers(ctx: &Ctx) -> Vec<Container> {
    let spec = &ctx.app.spec;
    let queue_env = all_queue_env(&ctx.name, &spec.queues);
    match spec.mode {
        Mode::Embedded => {
            // Listener flags are explicit: `cello run` ignores host/port in cello.yaml and
            // defaults to 127.0.0.1:8000, which the kubelet and the Service cannot reach.
            let mut args = vec![
                "run".into(),
                spec.app.clone(),
                "--host".into(),
                "0.0.0.0".into(),
                "--port".into(),
                spec.port.to_string(),
                "--workers".into(),
                spec.workers.to_string(),
            ];
            args.extend(spec.args.iter().cloned());
            let mut c = serving_container(ctx, "app", spec.image.clone(), vec!["cello".into()], args);
            let mut env = base_env(ctx);
            env.extend(queue_env);
            c.env = Some(with_user_env(env, &spec.env_vars));
            c.env_from = (!spec.env_from.is_empty()).then(|| spec.env_from.clone());
            c.resources = spec.resources.clone();
            vec![c]
        }
        Mode::Sidecar => {
            let sc = spec.sidecar.clone().unwrap_or(crate::crd::SidecarSpec {
                image: None,
                app_port: 8080,
                command: Vec::new(),
                resources: None,
            });
            let upstream = format!("http://127.0.0.1:{}", sc.app_port);
            let mut mut_env = vec![plain("PORT", sc.app_port.to_string())];
            mut_env.extend(queue_env);
            let app = Container {
                name: "app".into(),
                image: Some(spec.image.clone()),
                image_pull_policy: spec.image_pull_policy.map(pull_policy),
                command: (!sc.command.is_empty()).then(|| sc.command.clone()),
                args: (!spec.args.is_empty()).then(|| spec.args.clone()),
                env: Some(with_user_env(mut_env, &spec.env_vars)),
                env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
                resources: spec.resources.clone(),
                volume_mounts: Some(vec![VolumeMount {
                    name: "tmp".into(),
                    mount_path: "/tmp".into(),
                    ..VolumeMount::default()
                }]),
                security_context: Some(restricted_container()),
                ..Container::default()
            };
            let args = vec![
                "--config".into(),
                format!("{CONFIG_DIR}/cello.yaml"),
                "--upstream".into(),
                upstream.clone(),
            ];
            let image = sc.image.clone().unwrap_or_else(|| DEFAULT_DATAPLANE_IMAGE.into());
            let mut dp = serving_container(ctx, "cello-dataplane", image, vec!["cello-dataplane".into()], args);
            let mut env = base_env(ctx);
            env.push(plain(cello_config::env::UPSTREAM, upstream));
            dp.env = Some(env);
            dp.resources = sc.resources.clone();
            // The data plane fronts the app: it comes first so `kubectl logs` and exec default to it.
            vec![dp, app]
        }
    }
}

fn pod_annotations(ctx: &Ctx) -> BTreeMap<String, String> {
    let mut a = ctx
        .app
        .spec
        .pod_template
        .as_ref()
        .map(|p| p.annotations.clone())
        .unwrap_or_default();
    a.insert(CONFIG_HASH_ANNOTATION.into(), ctx.config_hash.clone());
    // Scrape annotations only when no monitor object is made: never both.
    if let (Some(m), None) = (ctx.metrics(), ctx.monitor_kind()) {
        a.insert("prometheus.io/scrape".into(), "true".into());
        a.insert("prometheus.io/path".into(), m.path.clone());
        a.insert(
            "prometheus.io/port".into(),
            metrics_port(ctx).unwrap_or(ctx.app.spec.port).to_string(),
        );
    }
    a
}

fn pod_spec(ctx: &Ctx, containers: Vec<Container>) -> PodSpec {
    let spec = &ctx.app.spec;
    let pt = spec.pod_template.clone().unwrap_or_default();
    PodSpec {
        containers,
        volumes: Some(volumes(ctx)),
        security_context: Some(restricted_pod(ctx)),
        termination_grace_period_seconds: Some(grace(ctx)),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| spec.image_pull_secrets.clone()),
        service_account_name: pt.service_account_name,
        node_selector: (!pt.node_selector.is_empty()).then_some(pt.node_selector),
        tolerations: (!pt.tolerations.is_empty()).then_some(pt.tolerations),
        affinity: pt.affinity,
        topology_spread_constraints: (!pt.topology_spread_constraints.is_empty())
            .then_some(pt.topology_spread_constraints),
        priority_class_name: pt.priority_class_name,
        ..PodSpec::default()
    }
}

fn pod_labels(ctx: &Ctx, ours: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut l = ctx
        .app
        .spec
        .pod_template
        .as_ref()
        .map(|p| p.labels.clone())
        .unwrap_or_default();
    l.extend(ours);
    l
}

/// Replicas of the app Deployment: absent exactly when an autoscaler owns the count.
pub(crate) fn app_replicas(ctx: &Ctx) -> Option<i32> {
    if ctx.app.stopped() {
        return Some(0);
    }
    if ctx.effective_autoscaling() != AutoscalingMode::None {
        return None;
    }
    let min = ctx.app.spec.autoscaling.as_ref().map_or(1, |a| a.min_replicas.max(1));
    Some(ctx.app.spec.replicas.unwrap_or(min))
}

fn strategy(ctx: &Ctx) -> Option<DeploymentStrategy> {
    let r = ctx.app.spec.rollout.as_ref()?;
    if r.max_surge.is_none() && r.max_unavailable.is_none() {
        return None;
    }
    Some(DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: r.max_surge.clone(),
            max_unavailable: r.max_unavailable.clone(),
        }),
    })
}

pub(crate) fn deployment(ctx: &Ctx) -> Result<Value> {
    let d = Deployment {
        metadata: ctx.meta(ctx.app_name(), "app"),
        spec: DeploymentSpec {
            replicas: app_replicas(ctx),
            selector: LabelSelector {
                match_labels: Some(ctx.selector("app")),
                match_expressions: None,
            },
            strategy: strategy(ctx),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(ctx, ctx.labels("app"))),
                    annotations: Some(pod_annotations(ctx)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(ctx, containers(ctx))),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    };
    to_value("Deployment", &d)
}

/// Selector of a consumer's pods.
pub(crate) fn consumer_selector(ctx: &Ctx, c: &ConsumerSpec) -> BTreeMap<String, String> {
    let mut s = ctx.selector("consumer");
    s.insert(labels::CONSUMER.into(), super::label_value(&c.name));
    s
}

pub(crate) fn consumer_deployment(ctx: &Ctx, c: &ConsumerSpec) -> Result<Value> {
    let spec = &ctx.app.spec;
    let queue = spec
        .queues
        .iter()
        .find(|q| q.name == c.queue)
        .ok_or_else(|| Error::InvalidSpec(format!("consumer {} names unknown queue {}", c.name, c.queue)))?;
    let replicas = if ctx.app.stopped() {
        Some(0)
    } else if ctx.effective_autoscaling() == AutoscalingMode::Keda {
        None
    } else {
        Some(c.replicas)
    };
    let mut env = base_env(ctx);
    env.push(plain(cello_config::env::CONSUMER, c.name.clone()));
    // `cello consume --queue <name>` finds the binding through `CELLO_QUEUES`, as the app does.
    env.extend(all_queue_env(&ctx.name, std::slice::from_ref(queue)));
    let container = Container {
        name: "consumer".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(pull_policy),
        command: Some(vec!["cello".into()]),
        args: Some(vec![
            "consume".into(),
            c.handler.clone(),
            "--queue".into(),
            queue.name.clone(),
            "--admin-port".into(),
            CONSUMER_ADMIN_PORT.to_string(),
            "--host".into(),
            "0.0.0.0".into(),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(CONSUMER_ADMIN_PORT_NAME.into()),
            container_port: CONSUMER_ADMIN_PORT,
            ..ContainerPort::default()
        }]),
        // The admin server answers once every broker connection is up (`cello consume` exits
        // with 3 when one stays unreachable past --startup-timeout), so the startup probe
        // gives it a minute; readiness turns 503 while a broker is lost or during the drain.
        startup_probe: Some(admin_probe("/health/live", 2, 30)),
        liveness_probe: Some(admin_probe("/health/live", 10, 3)),
        readiness_probe: Some(admin_probe("/health/ready", 10, 3)),
        env: Some(with_user_env(env, &spec.env_vars)),
        env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
        resources: c.resources.clone().or_else(|| spec.resources.clone()),
        volume_mounts: Some(mounts(ctx)),
        security_context: Some(restricted_container()),
        ..Container::default()
    };
    let selector = consumer_selector(ctx, c);
    let mut labels = ctx.labels("consumer");
    labels.extend(selector.clone());
    let mut meta = ctx.meta(ctx.child_name(&c.name), "consumer");
    meta.labels = Some(labels.clone());
    let mut annotations = BTreeMap::new();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), ctx.config_hash.clone());
    // Scraped like the app's pods: by the consumers' PodMonitor when one is made, else by
    // annotations (never both).
    if ctx.metrics().is_some() && !ctx.consumer_pod_monitor() {
        annotations.insert("prometheus.io/scrape".into(), "true".into());
        annotations.insert("prometheus.io/path".into(), CONSUMER_METRICS_PATH.into());
        annotations.insert("prometheus.io/port".into(), CONSUMER_ADMIN_PORT.to_string());
    }
    let d = Deployment {
        metadata: meta,
        spec: DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(ctx, labels)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(ctx, vec![container])),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    };
    to_value("Deployment", &d)
}

/// Port name the metrics endpoint is served on.
pub(crate) fn metrics_port_name(ctx: &Ctx) -> &'static str {
    if metrics_port(ctx).is_some() {
        "metrics"
    } else {
        "http"
    }
}

/// Extra metrics port for the Service, if metrics use their own port.
pub(crate) fn service_metrics_port(ctx: &Ctx) -> Option<i32> {
    metrics_port(ctx)
}
