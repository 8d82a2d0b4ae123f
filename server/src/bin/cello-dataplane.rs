//! `cello-dataplane`: Cello's Rust stack as a standalone reverse proxy in front of
//! any HTTP app on localhost (the operator's `sidecar` mode).
//!
//! Configuration is the same `cello.yaml` the embedded server reads (the operator
//! mounts it from the app's ConfigMap); flags and `CELLO_*` variables override the
//! listener. Health probes and `/metrics` are answered here, never forwarded.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cello_config::ServerConfig;
use cello_server::proxy::{ProxyEndpoint, UpstreamCheck};
use cello_server::{ServeOptions, Server, Target};
use clap::Parser;
use http::Method;

/// mimalloc gives freed memory back to the OS after a burst (glibc's arenas do not).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "cello-dataplane",
    version,
    about = "Cello's data plane in front of an HTTP app"
)]
struct Args {
    /// The app to forward to, e.g. http://127.0.0.1:8080.
    #[arg(long, env = cello_config::env::UPSTREAM)]
    upstream: String,
    /// Server configuration (cello.yaml).
    #[arg(long, env = cello_config::env::CONFIG)]
    config: Option<std::path::PathBuf>,
    /// Address to listen on (overrides the file).
    #[arg(long, env = cello_config::env::HOST)]
    host: Option<String>,
    /// Port to listen on (overrides the file).
    #[arg(long, env = cello_config::env::PORT)]
    port: Option<u16>,
    /// Do not answer /health/* here.
    #[arg(long)]
    no_health: bool,
    /// Do not serve Prometheus metrics.
    #[arg(long)]
    no_metrics: bool,
    /// Serve HTTPS with this PEM certificate chain (overrides the file's `tls`).
    #[arg(long, env = cello_config::env::TLS_CERT_FILE, requires = "tls_key_file")]
    tls_cert_file: Option<String>,
    /// PEM private key of `--tls-cert-file`.
    #[arg(long, env = cello_config::env::TLS_KEY_FILE, requires = "tls_cert_file")]
    tls_key_file: Option<String>,
    /// PEM CA bundle: clients must present a certificate it signs (mutual TLS).
    #[arg(long, env = cello_config::env::TLS_CA_FILE, requires = "tls_cert_file")]
    tls_ca_file: Option<String>,
    /// Seconds to let in-flight requests finish on SIGTERM.
    #[arg(long, env = cello_config::env::SHUTDOWN_TIMEOUT, default_value_t = 30.0)]
    shutdown_timeout: f64,
    /// Open connections one client address may hold (overrides `limits.maxConnectionsPerIp`).
    #[arg(long, env = cello_config::env::MAX_CONNECTIONS_PER_IP)]
    max_connections_per_ip: Option<u64>,
}

fn load_config(args: &Args) -> anyhow::Result<ServerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            ServerConfig::from_yaml(&text).with_context(|| format!("invalid configuration in {}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    if let Some(host) = &args.host {
        config.host.clone_from(host);
    }
    if let Some(port) = args.port {
        config.port = port;
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
        let base = config.tls.take().unwrap_or_default();
        config.tls = Some(cello_config::TlsConfig {
            cert_path: cert.clone(),
            key_path: key.clone(),
            require_client_cert: args.tls_ca_file.is_some() || base.require_client_cert,
            ca_path: args.tls_ca_file.clone().or(base.ca_path.clone()),
            ..base
        });
    }
    if let Some(n) = args.max_connections_per_ip {
        config.limits.max_connections_per_ip = Some(n);
    }
    // A sidecar exists to give the app probes and metrics: on unless turned off.
    config.health.enabled = !args.no_health;
    config.prometheus.enabled = !args.no_metrics;
    config.validate()?;
    Ok(config)
}

/// Exit code for a port another process holds.
const EXIT_PORT_IN_USE: i32 = 3;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(cello_config::env::LOG).unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = load_config(&args)?;
    let proxy = ProxyEndpoint::new(&args.upstream, Duration::from_secs_f64(config.timeouts.handler))?;
    let ready = UpstreamCheck::new(proxy.upstream_addr()?);
    // Everything is forwarded: one catch-all route for every method.
    let all = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ];
    let mut builder = Server::builder(config);
    let index = builder.route(&all, "/", Target::Proxy(Arc::new(proxy)))?;
    builder.alias(&all, "/{*path}", index)?;
    let app = builder.health_checker(Arc::new(ready)).build()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = match app.bind_exclusive() {
            Ok(l) => l,
            Err(cello_server::Error::Bind { addr, source }) if source.kind() == std::io::ErrorKind::AddrInUse => {
                eprintln!("cello-dataplane: cannot listen on {addr}: the port is already in use");
                std::process::exit(EXIT_PORT_IN_USE);
            }
            Err(e) => return Err(e.into()),
        };
        let addr = listener.local_addr()?;
        tracing::info!(%addr, upstream = %args.upstream, "cello-dataplane serving");
        let opts = ServeOptions {
            drain_timeout: Duration::from_secs_f64(args.shutdown_timeout.max(0.0)),
            signals: true,
        };
        app.serve(listener, opts).await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
