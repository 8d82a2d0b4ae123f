//! `cello-operator`: with no arguments, runs the CellApp controller.
//!
//! Kubeconfig resolution is kube's standard one: in-cluster service account, else `KUBECONFIG`
//! or `~/.kube/config`. Environment: `WATCH_NAMESPACE` (default: all namespaces),
//! `CELLO_OPERATOR_PORT` (default 8080, serves `/metrics` and `/health`), `CELLO_OPERATOR_HOST`
//! (default: `POD_IP`, else 127.0.0.1), `RUST_LOG`,
//! `CELLO_LEADER_ELECTION=true` (with `POD_NAME` and `POD_NAMESPACE`) for Lease-based election.

use std::sync::Arc;

use anyhow::Context as _;
use cello_operator::controller::{self, Settings};
use cello_operator::leader::{self, LeaseSettings};
use cello_operator::metrics::Metrics;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(arg) = std::env::args().nth(1) {
        anyhow::bail!("unexpected argument `{arg}`; run `cello-operator` with no arguments to start the controller");
    }
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn")))
        .init();

    let port: u16 = match cello_config::env::var(cello_config::env::OPERATOR_PORT) {
        Some(p) => p.parse().context("CELLO_OPERATOR_PORT must be a port number")?,
        None => 8080,
    };
    let settings = Settings {
        namespace: std::env::var("WATCH_NAMESPACE").ok().filter(|n| !n.is_empty()),
        ..Settings::default()
    };
    let client = kube::Client::try_default()
        .await
        .context("no usable kubeconfig (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());

    // One shutdown signal (SIGTERM or Ctrl-C) fans out to the controller and the HTTP server.
    let (tx, rx) = watch::channel(false);
    let tx_shutdown = tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let host = controller::metrics_host(
        cello_config::env::var(cello_config::env::OPERATOR_HOST).as_deref(),
        std::env::var("POD_IP").ok().as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .context("bind metrics port")?;
    tracing::info!(%host, port, namespace = ?settings.namespace, "starting cello-operator");
    let http = tokio::spawn(controller::serve_http(listener, metrics.clone(), stopped(rx.clone())));

    if cello_config::env::var(cello_config::env::LEADER_ELECTION).is_some_and(|v| v == "true") {
        let lease = LeaseSettings {
            namespace: std::env::var("POD_NAMESPACE").context("leader election needs POD_NAMESPACE")?,
            name: "cello-operator".into(),
            identity: std::env::var("POD_NAME").context("leader election needs POD_NAME")?,
            duration: std::time::Duration::from_secs(15),
        };
        tokio::select! {
            _ = leader::acquire(&client, &lease) => tracing::info!(identity = %lease.identity, "became leader"),
            _ = stopped(rx.clone()) => {
                let _ = http.await;
                return Ok(());
            }
        }
        // Losing the Lease stops the controller; the non-zero exit restarts the pod as a follower.
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (hold_client, hold_lost) = (client.clone(), lost.clone());
        let release = lease.clone();
        tokio::spawn(async move {
            leader::hold(&hold_client, &lease).await;
            tracing::error!("lost the leader Lease; stopping");
            hold_lost.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = tx_shutdown.send(true);
        });
        controller::run(client.clone(), settings, metrics, stopped(rx)).await;
        if lost.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = http.await;
            anyhow::bail!("lost leadership");
        }
        // Stopped by a signal: hand the Lease over now rather than after it expires.
        match leader::release(&client, &release, k8s_openapi::jiff::Timestamp::now()).await {
            Ok(()) => tracing::info!("released the leader Lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the leader Lease"),
        }
        let _ = http.await;
        return Ok(());
    }
    controller::run(client, settings, metrics, stopped(rx)).await;
    let _ = http.await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
