//! `opsplane-node-daemon`: the per-node agent. Reads the configuration, starts the background
//! sampler over the host probes and serves the node API, `/healthz` and `/metrics`.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use prometheus::Registry;

use opsplane_node_daemon::api::{self, AppState};
use opsplane_node_daemon::config::Cli;
use opsplane_node_daemon::host::HostRoot;
use opsplane_node_daemon::maintain;
use opsplane_node_daemon::metrics::{self, ProbeMetrics};
use opsplane_node_daemon::monitor::Limits;
use opsplane_node_daemon::probe::{self, ProbeSettings};
use opsplane_node_daemon::reporter::{Reporter, ReporterConfig, TimerState};
use opsplane_node_daemon::sampler::Sampler;
use opsplane_node_daemon::task::{self, Runner, SystemClock};
use opsplane_node_daemon::watch;
use opsplane_serve::auth::{Auth, Credentials, Role};
use opsplane_serve::guard::Guard;
use opsplane_serve::listener::{self, Connections, ListenerConfig};
use opsplane_serve::logging;
use opsplane_serve::observe::{self, Api, RequestMetrics};
use opsplane_serve::ratelimit::{self, Counter, MemoryCounter};
use opsplane_serve::shutdown::shutdown_signal;

/// jemalloc, so that `POST /maintain/v1/memory/free` can return free memory to the OS.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options ([`opsplane_serve::maintain::JEMALLOC_CONF`]): freed memory goes
/// back to the OS by itself within about a second.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 60] = opsplane_serve::maintain::JEMALLOC_CONF;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let levels = logging::init(&cli.log, cli.log_format);
    // Connections are capped at three quarters of the open-file limit by default: raise it to
    // its hard limit first.
    if opsplane_serve::listener::raise_open_file_limit().is_none() {
        tracing::warn!("cannot read the open-file limit");
    }
    let timeouts = cli
        .listener
        .timeouts()
        .map_err(|e| anyhow::anyhow!("invalid listener configuration: {e}"))?;
    if !cli.host_root.is_dir() {
        anyhow::bail!(
            "--host-root {} is not a directory (in the DaemonSet it is /host, the node's / mounted read-only)",
            cli.host_root.display()
        );
    }
    let token = cli.resolve_token()?;
    let report_token = match cli.report_token.as_deref() {
        Some(raw) => Some(
            opsplane_serve::bearer::BearerToken::from_config(raw)
                .map_err(|_| anyhow::anyhow!("--report-token / OPSPLANE_REPORT_TOKEN is empty"))?
                .expose()
                .to_owned(),
        ),
        None => token.as_ref().map(|t| t.expose().to_owned()),
    };
    if token.is_none() {
        tracing::warn!("no OPSPLANE_TOKEN / --token-file: the node API refuses every request");
    }

    let registry = Registry::new();
    let connections = Connections::new(&registry)?;
    metrics::info(&registry, cli.node_name.as_deref().unwrap_or_default())?;
    let probe_metrics = Arc::new(ProbeMetrics::register(&registry)?);
    let settings = ProbeSettings {
        services: cli
            .services
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        systemctl: cli.systemctl_command(),
        service_interval: cli.service_interval,
        nics: cli.nics.clone(),
    };
    let sampler = Arc::new(Sampler::new(
        HostRoot::new(&cli.host_root),
        probe::registry(&settings),
        Some(probe_metrics),
    ));
    // The first cycle runs before serving so every endpoint has data from the start.
    let first = sampler.clone();
    tokio::task::spawn_blocking(move || first.cycle_now())
        .await
        .context("first sampling cycle")?;
    let sampling = tokio::spawn(sampler.clone().run(cli.sample_interval));

    let hostname = std::fs::read_to_string(cli.host_root.join("proc/sys/kernel/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let node_uuid = cli.node_uuid.clone().unwrap_or_else(|| {
        std::fs::read_to_string(cli.host_root.join("etc/machine-id"))
            .map(|m| m.trim().to_owned())
            .ok()
            .filter(|m| !m.is_empty())
            .or_else(|| cli.node_name.clone())
            .unwrap_or_default()
    });
    let reporter = Reporter::new(
        ReporterConfig {
            initial: TimerState {
                addr: cli.report_addr.clone(),
                node_uuid,
                paused: false,
            },
            interval: cli.report_interval,
            queue_limit: cli.report_queue as usize,
            state_file: Some(cli.state_dir.join("report-timer.json")),
            token: report_token,
            hostname,
            ip: cli.report_ip.clone(),
        },
        &registry,
    )?;
    let timer = tokio::spawn(reporter.clone().run_timer(sampler.clone()));
    let sender = tokio::spawn(reporter.clone().run_sender());
    let task_settings = cli.task_settings()?;
    if let Some(dir) = &task_settings.ip_config_dir {
        let (restored, failed) = task::ip::restore(dir).await;
        if !restored.is_empty() {
            tracing::info!(?restored, dir = %dir.display(), "re-added IP configurations missing from their NICs");
        }
        for problem in failed {
            tracing::warn!(%problem, "cannot restore an IP configuration");
        }
    }
    let tasks = Runner::new(task_settings, Some(reporter), Arc::new(SystemClock))
        .map_err(|e| anyhow::anyhow!("task runner: {e}"))?;
    let schedules = tokio::spawn(tasks.clone().run_schedules());
    let node_tasks = match (
        watch::enabled(&cli.node_tasks, cli.node_name.as_deref()),
        cli.node_name.clone().filter(|n| !n.is_empty()),
    ) {
        (true, Some(node)) => {
            let client = kube::Client::try_default()
                .await
                .context("NodeTask watcher: no usable kubeconfig or in-cluster configuration (--node-tasks off turns the watcher off)")?;
            let watcher =
                watch::Watcher::new(client, node, tasks.clone(), &cli.state_dir, &cli.host_root)
                    .map_err(|e| anyhow::anyhow!("NodeTask watcher: {e}"))?;
            Some(tokio::spawn(watcher.run()))
        }
        (true, None) => anyhow::bail!("--node-tasks on needs --node-name (NODE_NAME)"),
        (false, _) => None,
    };
    // The node API token is admin; the metrics token may only read /metrics. Without any
    // token the guard has no credential to check: the node API handlers refuse every request
    // themselves, saying that no token is configured, and /metrics is refused unless open.
    let metrics_token = cli.resolve_metrics_token()?;
    let guard = if token.is_some() || metrics_token.is_some() {
        let mut credentials = Credentials::default();
        if let Some(token) = &token {
            credentials.add_token(task::IDENTITY_NODE_API, Role::Admin, token.expose());
        }
        if let Some(metrics_token) = &metrics_token {
            credentials.add_token("metrics", Role::Viewer, metrics_token.expose());
        }
        let limits = ratelimit::Limits::parse(&cli.rate_limit)
            .map_err(|e| anyhow::anyhow!("--rate-limit: {e}"))?;
        let counter: Arc<dyn Counter> = Arc::new(MemoryCounter::default());
        let guard = Guard::new(
            Auth::new(credentials, None, false),
            limits,
            Some(counter),
            &registry,
        )?;
        guard.limit_in_flight(cli.max_in_flight);
        Some((guard, api::rules(cli.open_metrics).into()))
    } else {
        None
    };
    if cli.open_metrics {
        tracing::warn!("--open-metrics: /metrics (with the host's inventory) needs no credential");
    }
    let guard_absent_and_closed = guard.is_none() && !cli.open_metrics;
    let http = Api {
        name: "node",
        metrics: RequestMetrics::register(&registry)?,
        timeout: cli.request_timeout,
        envelope: api::layer_envelope,
        guard,
    };
    let maintain = maintain::router(
        opsplane_serve::maintain::Maintain::new(
            connections.clone(),
            levels,
            cli.maintain.maintain_log_levels,
        ),
        token.clone(),
        // Polaris answers the maintain API in plain text, errors included.
        Api {
            name: "maintain",
            envelope: opsplane_serve::maintain::plain,
            ..http.clone()
        },
    );
    let state = Arc::new(AppState {
        tasks,
        registry,
        sampler,
        token,
        metrics_refused: guard_absent_and_closed,
        limits: Limits {
            port_threshold: cli.port_threshold,
        },
    });
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    tracing::info!(address = %cli.listen, host_root = %cli.host_root.display(), "node-daemon serving");
    let served = listener::serve(
        listener,
        observe::outer(http.wrap(api::router(state)).merge(maintain)),
        &connections,
        ListenerConfig {
            protocol: maintain::PROTOCOL.into(),
            limits: cli.listener.limits(),
            timeouts,
        },
        shutdown_signal(),
    )
    .await
    .context("node API server failed");
    sampling.abort();
    timer.abort();
    sender.abort();
    schedules.abort();
    if let Some(node_tasks) = node_tasks {
        node_tasks.abort();
    }
    served
}
