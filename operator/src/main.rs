//! `cello-operator`: with no arguments, runs the CellApp controller.
//!
//! Kubeconfig resolution is kube's standard one: in-cluster service account, else `KUBECONFIG`
//! or `~/.kube/config`. Environment: `WATCH_NAMESPACE` (default: all namespaces),
//! `CELLO_OPERATOR_PORT` (default 8080, serves `/metrics` and `/health`), `RUST_LOG`.

use std::sync::Arc;

use anyhow::Context as _;
use cello_operator::controller::{self, Settings};
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

    let port: u16 = match std::env::var("CELLO_OPERATOR_PORT") {
        Ok(p) => p.parse().context("CELLO_OPERATOR_PORT must be a port number")?,
        Err(_) => 8080,
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
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .context("bind metrics port")?;
    tracing::info!(port, namespace = ?settings.namespace, "starting cello-operator");
    let http = tokio::spawn(controller::serve_http(listener, metrics.clone(), stopped(rx.clone())));
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
