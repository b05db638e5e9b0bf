//! The node agent of this host, run in the standalone operator's process (SPEC "Modes":
//! standalone is API + the node agent for the local host + checks): the node-daemon's probes
//! and sampler over `--host-root`, its seed 002 node API on `--node-listen` (same routes,
//! envelope and return codes as `opsplane-node-daemon`, behind the API's credentials), its task
//! runner with the node-daemon's safety switches, and its seed 002 §四 reports — recorded in the
//! store directly ([`StoreSink`]) instead of posted to `POST /`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use opsplane_node_daemon::api as node_api;
use opsplane_node_daemon::host::HostRoot;
use opsplane_node_daemon::metrics::{self as node_metrics, ProbeMetrics};
use opsplane_node_daemon::monitor::Limits;
use opsplane_node_daemon::probe::{self, ProbeSettings};
use opsplane_node_daemon::reporter::{ReportSink, Reporter, ReporterConfig, SinkError, TimerState};
use opsplane_node_daemon::sampler::Sampler;
use opsplane_node_daemon::task::{Runner, SystemClock};
use opsplane_resources::node_report::NodeReport;
use opsplane_serve::bearer::BearerToken;
use opsplane_serve::guard::Guard;
use opsplane_serve::listener::{self, Connections, ListenerConfig};
use opsplane_serve::observe::{self, Api, RequestMetrics};
use prometheus::Registry;

use crate::config::{NodeAgentArgs, NodeListen};
use crate::metrics::Metrics;
use crate::recorder::Recorder;

/// Reports go into the store as `POST /` would record them, counted in the same metrics.
pub struct StoreSink {
    /// The operator's recorder.
    pub recorder: Recorder,
    /// The operator's metrics (`opsplane_node_reports_received_total`, store errors).
    pub metrics: Metrics,
}

impl ReportSink for StoreSink {
    fn describe(&self) -> String {
        "the operator's store (in-process)".into()
    }

    fn deliver<'a>(
        &'a self,
        report: &'a NodeReport,
    ) -> futures::future::BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if report.utc < 0 {
                return Err(SinkError::Refused(format!(
                    "utc {} is before 1970",
                    report.utc
                )));
            }
            self.metrics.node_report(report.kind().as_str());
            self.metrics.node_seen(&report.hostname, report.utc);
            self.recorder
                .node_report(report, Some(opsplane_node_daemon::reporter::USER_AGENT))
                .await
                .map_err(|error| {
                    self.metrics.store_error("node_report");
                    SinkError::Unavailable(error.to_string())
                })
        })
    }
}

/// The running agent: its task runner (for NodeTasks) and its background work.
pub struct NodeAgent {
    /// The task runner, shared by the node API and the standalone NodeTask runner.
    pub runner: Arc<Runner>,
    /// The node name tasks and reports use (this host's name).
    pub node: String,
    tasks: tokio::task::JoinSet<()>,
}

impl NodeAgent {
    /// Stops the agent's background work.
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

/// What the agent needs from the rest of the standalone operator.
pub struct Shared<'a> {
    /// This host's name.
    pub hostname: &'a str,
    /// The standalone data directory; the agent's state is in `<data_dir>/node`.
    pub data_dir: &'a Path,
    /// The API's guard: the node API takes the API's credentials (admins only, as the
    /// node-daemon's one token is admin) and rate limits.
    pub guard: Guard,
    /// The operator's recorder.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// The API's token, which the node API's handlers also accept.
    pub token: BearerToken,
    /// Longest a node API request may take.
    pub request_timeout: std::time::Duration,
    /// The listener settings of the API, also applied to the node API.
    pub listener: &'a opsplane_serve::listener::ListenArgs,
}

/// Starts the agent: the first sampling cycle (before returning, so the first report and every
/// node API endpoint have data), the sampler, the report timer and sender, the crontab
/// schedules and, unless `--node-listen off`, the node API.
pub async fn start(args: &NodeAgentArgs, shared: Shared<'_>) -> anyhow::Result<NodeAgent> {
    if !args.host_root.is_dir() {
        anyhow::bail!(
            "--host-root {} is not a directory",
            args.host_root.display()
        );
    }
    let state_dir = shared.data_dir.join("node");
    let registry = Registry::new();
    node_metrics::info(&registry, shared.hostname)?;
    let probe_metrics = Arc::new(ProbeMetrics::register(&registry)?);
    let systemctl: Vec<String> = args
        .systemctl
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if systemctl.is_empty() {
        anyhow::bail!("--systemctl is empty");
    }
    let settings = ProbeSettings {
        services: args
            .services
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        systemctl,
        service_interval: std::time::Duration::from_secs(10),
        nics: None,
    };
    let sampler = Arc::new(Sampler::new(
        HostRoot::new(&args.host_root),
        probe::registry(&settings),
        Some(probe_metrics),
    ));
    let first = sampler.clone();
    tokio::task::spawn_blocking(move || first.cycle_now())
        .await
        .context("first sampling cycle of the node agent")?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(sampler.clone().run(args.sample_interval));

    let node_uuid = std::fs::read_to_string(args.host_root.join("etc/machine-id"))
        .map(|m| m.trim().to_owned())
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| shared.hostname.to_owned());
    let sink = Arc::new(StoreSink {
        recorder: shared.recorder.clone(),
        metrics: shared.metrics.clone(),
    });
    let reporter = Reporter::with_sink(
        ReporterConfig {
            initial: TimerState {
                addr: String::new(),
                node_uuid,
                paused: false,
            },
            interval: args.report_interval,
            queue_limit: 1000,
            state_file: Some(state_dir.join("report-timer.json")),
            token: None,
            hostname: shared.hostname.to_owned(),
            ip: "127.0.0.1".into(),
        },
        sink,
        &registry,
    )?;
    tasks.spawn(reporter.clone().run_timer(sampler.clone()));
    tasks.spawn(reporter.clone().run_sender());

    let task_settings = args
        .tasks
        .settings(&args.host_root, &state_dir, &args.systemctl, "")?;
    let runner = Runner::new(task_settings, Some(reporter), Arc::new(SystemClock))
        .map_err(|e| anyhow::anyhow!("node agent task runner: {e}"))?;
    tasks.spawn(runner.clone().run_schedules());

    match args.node_listen {
        NodeListen::Off => {}
        NodeListen::On(addr) => {
            let http = Api {
                name: "node",
                metrics: RequestMetrics::register(&registry)?,
                timeout: shared.request_timeout,
                envelope: node_api::layer_envelope,
                // /metrics (the host's inventory) needs a viewer of the operator's API.
                guard: Some((shared.guard.clone(), node_api::rules(false).into())),
            };
            let connections = Connections::new(&registry)?;
            let state = Arc::new(node_api::AppState {
                tasks: runner.clone(),
                registry,
                sampler,
                token: Some(shared.token.clone()),
                metrics_refused: false,
                limits: Limits { port_threshold: 4 },
            });
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "--node-listen {addr}: cannot listen (`--node-listen off` serves no node API)"
                )
            })?;
            let bound = listener.local_addr()?;
            let timeouts = shared
                .listener
                .timeouts()
                .map_err(|e| anyhow::anyhow!("invalid listener configuration: {e}"))?;
            let config = ListenerConfig {
                protocol: "node".into(),
                limits: shared.listener.limits(),
                timeouts,
            };
            let router = observe::outer(http.wrap(node_api::router(state)));
            tracing::info!(address = %bound, host_root = %args.host_root.display(), "node agent serving the node API");
            tasks.spawn(async move {
                if let Err(error) = listener::serve(
                    listener,
                    router,
                    &connections,
                    config,
                    std::future::pending(),
                )
                .await
                {
                    tracing::error!(%error, "the node API stopped");
                }
            });
        }
    }
    Ok(NodeAgent {
        runner,
        node: shared.hostname.to_owned(),
        tasks,
    })
}
