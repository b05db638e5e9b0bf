//! `opsplane-node-daemon`: the per-node agent. This first slice serves `/healthz` and
//! `/metrics`; host probes, the seed 002 node API, tasks and reports build on it.

mod config;

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;
use prometheus::{Encoder, IntGauge, Opts, Registry, TextEncoder};

use crate::config::Cli;

struct AppState {
    registry: Registry,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut buffer = Vec::new();
    let body = match TextEncoder::new().encode(&state.registry.gather(), &mut buffer) {
        Ok(()) => String::from_utf8(buffer).unwrap_or_default(),
        Err(_) => String::new(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

fn registry(cli: &Cli) -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    let info = IntGauge::with_opts(
        Opts::new(
            "opsplane_node_daemon_info",
            "Build and node of this node-daemon",
        )
        .const_label("version", env!("CARGO_PKG_VERSION"))
        .const_label("node", cli.node_name.clone().unwrap_or_default()),
    )?;
    info.set(1);
    registry.register(Box::new(info))?;
    Ok(registry)
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if !cli.host_root.is_dir() {
        anyhow::bail!(
            "--host-root {} is not a directory (in the DaemonSet it is /host, the node's / mounted read-only)",
            cli.host_root.display()
        );
    }
    let state = Arc::new(AppState {
        registry: registry(&cli)?,
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    tracing::info!(address = %cli.listen, host_root = %cli.host_root.display(), "node-daemon serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("node API server failed")
}
