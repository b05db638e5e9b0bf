//! `opsplane-operator`: the in-cluster operator (controllers + REST API), the standalone mode,
//! and the `crds` generator.

mod api;
mod auth;
mod check;
mod config;
mod controller;
mod leader;
mod metrics;
mod recorder;
mod standalone;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tokio::sync::RwLock;

use crate::api::AppState;
use crate::api::monitoring::notifications::evaluate::Notifier;
use crate::api::resources::backend::{Backend, Local};
use crate::config::{Cli, ClusterArgs, Command, ServeArgs, StandaloneArgs};
use crate::controller::Context;
use crate::leader::{Elector, LeaseConfig};
use crate::metrics::Metrics;
use opsplane_serve::bearer::BearerToken;
use opsplane_serve::listener::{self, Connections, ListenerConfig};
use opsplane_serve::logging::{self, LogLevels};
use opsplane_serve::maintain::Maintain;

/// jemalloc, so that `POST /maintain/v1/memory/free` can return free memory to the OS.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options ([`opsplane_serve::maintain::JEMALLOC_CONF`]): freed memory goes
/// back to the OS by itself within about a second.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 60] = opsplane_serve::maintain::JEMALLOC_CONF;
use opsplane_serve::shutdown::shutdown_signal;

/// The name of this host, as the kernel has it (`localhost` when it cannot be read).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds { out_dirs }) => write_crds(&out_dirs),
        Some(Command::Ops(config::OpsCommand::Connect {
            key,
            to,
            ops_api,
            token,
        })) => ops_connect(&key, &to, &ops_api, token.as_deref()).await,
        Some(Command::Standalone(args)) => {
            let levels = logging::init(&args.serve.log, args.serve.log_format);
            open_files();
            run_standalone(*args, levels).await
        }
        None => {
            let levels = logging::init(&cli.cluster.serve.log, cli.cluster.serve.log_format);
            open_files();
            run_cluster(cli.cluster, levels).await
        }
    }
}

/// `opsplane-operator ops connect`: `POST <ops_api>/connect` of the running operator, its
/// answer printed (the pending or connected supervisor; never a key).
async fn ops_connect(
    key: &str,
    to: &str,
    ops_api: &str,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let url = format!("{}/connect", ops_api.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut request = http
        .post(&url)
        .json(&serde_json::json!({"key": key, "to": to}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "{url} answered {status}: {}",
            body["msg"].as_str().unwrap_or("(no message)")
        );
    }
    println!("{}", serde_json::to_string_pretty(&body["result"])?);
    Ok(())
}

fn write_crds(out_dirs: &[PathBuf]) -> anyhow::Result<()> {
    if out_dirs.is_empty() {
        print!("{}", opsplane_resources::crd::all_yaml()?);
        return Ok(());
    }
    for dir in out_dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, text) in opsplane_resources::crd::files()? {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// `OPSPLANE_TOKEN`, without surrounding white space (a Secret made from a file often ends in
/// a newline; clients never send it). An empty or blank value counts as unset.
fn token_from_env() -> Option<BearerToken> {
    let raw = std::env::var("OPSPLANE_TOKEN").ok()?;
    let token = BearerToken::from_config(&raw).ok()?;
    if token.was_trimmed() {
        tracing::warn!("OPSPLANE_TOKEN has white space around it; it was removed");
    }
    Some(token)
}

/// The standalone token: OPSPLANE_TOKEN, else one kept in `<data_dir>/token` (created 0600).
fn standalone_token(data_dir: &Path) -> anyhow::Result<BearerToken> {
    if let Some(token) = token_from_env() {
        return Ok(token);
    }
    let path = data_dir.join("token");
    if let Some(token) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|existing| BearerToken::from_config(&existing).ok())
    {
        tracing::info!(path = %path.display(), "API token read from file (OPSPLANE_TOKEN is unset)");
        return Ok(token);
    }
    use rand::Rng;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{token}")?;
    tracing::info!(path = %path.display(), "generated an API token (OPSPLANE_TOKEN is unset)");
    BearerToken::from_config(&token).map_err(|e| anyhow::anyhow!("generated token: {e}"))
}

fn default_data_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(state).join("opsplane");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/state/opsplane");
    }
    PathBuf::from(".opsplane")
}

/// Opens the configured store and starts its upkeep: roll-ups every 10 s, pruning every 10
/// minutes (both idempotent, so every replica may run them).
async fn open_store(
    args: &crate::config::StoreArgs,
    default_path: PathBuf,
    metrics: &Metrics,
) -> anyhow::Result<recorder::Recorder> {
    let retention = args
        .retention()
        .map_err(|e| anyhow::anyhow!("invalid store configuration: {e}"))?;
    let path = args.store_path.clone().unwrap_or(default_path);
    if args.store_timeout.is_zero() {
        anyhow::bail!("--store-timeout: must be more than 0");
    }
    let store = opsplane_store::open_with(
        args.redis_url.as_deref(),
        &path,
        retention,
        args.store_timeout,
    )
    .await
    .map_err(|e| match &args.redis_url {
        Some(_) => anyhow::anyhow!("cannot connect to Redis (OPSPLANE_REDIS_URL): {e}"),
        None => anyhow::anyhow!("cannot open the embedded store {}: {e}", path.display()),
    })?;
    match &args.redis_url {
        Some(_) => tracing::info!("metric store: Redis"),
        None => tracing::info!(path = %path.display(), "metric store: embedded"),
    }
    // While the store is unreachable, calls fail at once (503s in well under a second, and
    // /readyz fails) instead of each waiting for its own timeout; every failure is counted.
    let store: std::sync::Arc<dyn opsplane_store::Store> = {
        let metrics = metrics.clone();
        std::sync::Arc::new(opsplane_store::breaker::Breaker::new(
            store,
            opsplane_store::breaker::Settings::default(),
            Some(std::sync::Arc::new(move |operation: &'static str| {
                metrics.store_operation_error(operation)
            })),
        ))
    };
    let recorder = recorder::Recorder::new(store)
        .with_max_new_names(args.max_new_labels)
        .with_max_labels_per_service(args.max_labels_per_service);
    let upkeep = recorder.clone();
    let metrics = metrics.clone();
    tokio::spawn(async move {
        let mut ticks: u64 = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            if let Err(error) = upkeep.store().rollup().await {
                metrics.store_error("rollup");
                tracing::warn!(%error, "roll-up failed");
            }
            ticks += 1;
            // Every hour this process forgets the registry ids it cached, so an id pruned
            // below is never written again from a cache (a cached id was used within the hour,
            // so its entry was seen then and is far from the retention's end).
            if ticks.is_multiple_of(360) {
                upkeep.forget_ids().await;
            }
            if ticks % 60 == 1 {
                let now = jiff::Timestamp::now().as_second();
                if let Err(error) = upkeep.store().prune(now).await {
                    metrics.store_error("prune");
                    tracing::warn!(%error, "pruning failed");
                }
                match upkeep.prune_registry(now).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(entries = n, "labels and resources without data pruned")
                    }
                    Err(error) => {
                        metrics.store_error("prune");
                        tracing::warn!(%error, "pruning the registries failed");
                    }
                }
            }
        }
    });
    match &args.geoip_database {
        Some(path) => {
            let geoip = recorder::geoip::GeoIp::open(path)
                .map_err(|e| anyhow::anyhow!("--geoip-database: {e}"))?;
            tracing::info!(path = %path.display(), "GeoIP database");
            Ok(recorder.with_geoip(std::sync::Arc::new(geoip)))
        }
        None => Ok(recorder),
    }
}

/// Raises the open-file limit to its hard limit, so connections (capped at three quarters of
/// it by default) cannot starve the process of descriptors.
fn open_files() {
    match opsplane_serve::listener::raise_open_file_limit() {
        Some(limit) => tracing::debug!(limit, "open-file limit"),
        None => tracing::warn!("cannot read the open-file limit"),
    }
}

/// The maintain API's state over the process's connections and log levels.
fn maintain_state(
    serve: &ServeArgs,
    metrics: &Metrics,
    levels: LogLevels,
) -> anyhow::Result<api::maintain::MaintainState> {
    Ok(api::maintain::MaintainState {
        shared: Maintain::new(
            Connections::new(metrics.registry())?,
            levels,
            serve.maintain.maintain_log_levels,
        ),
        stale_after: serve.maintain_stale_after,
    })
}

/// Serves the API on `--listen` through the counting accept loop (protocol `http`, as
/// Polaris names its HTTP API listener) until SIGTERM/SIGINT, then drains within the grace.
async fn serve(
    serve: &ServeArgs,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let timeouts = serve
        .listener
        .timeouts()
        .map_err(|e| anyhow::anyhow!("invalid listener configuration: {e}"))?;
    let listener = tokio::net::TcpListener::bind(serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    tracing::info!(address = %serve.listen, "serving the API");
    let connections = state.maintain.shared.connections.clone();
    let config = ListenerConfig {
        protocol: "http".into(),
        limits: serve.listener.limits(),
        timeouts,
    };
    listener::serve(listener, api::router(state), &connections, config, shutdown)
        .await
        .context("API server failed")
}

async fn run_standalone(args: StandaloneArgs, levels: LogLevels) -> anyhow::Result<()> {
    let standalone::Config {
        services,
        tasks: file_tasks,
    } = match standalone::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("opsplane-operator: invalid config: {e}");
            std::process::exit(2);
        }
    };
    tracing::info!(config = %args.config.display(), services = services.len(), tasks = file_tasks.len(), "standalone mode");
    let (task_sender, task_receiver) = tokio::sync::mpsc::unbounded_channel();
    let _ = task_sender.send(file_tasks);
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let token = standalone_token(&data_dir)?;
    let metrics = Metrics::new()?;
    metrics.leader.set(1);
    let store = open_store(&args.serve.store, data_dir.join("store.redb"), &metrics).await?;
    let services = Arc::new(RwLock::new(services));
    let checks = tokio::spawn(standalone::run(
        args.config.clone(),
        services.clone(),
        check::Clients::new()?,
        metrics.clone(),
        store.clone(),
        Duration::from_millis(args.reload_poll_ms),
        task_sender,
    ));
    // The services created through the API are checked too (standalone::api_checks).
    let api_checks = tokio::spawn(standalone::api_checks::run(
        store.store().clone(),
        check::Clients::new()?,
        metrics.clone(),
        store.clone(),
        Duration::from_secs(2),
    ));
    let kubernetes_auth = args.serve.auth.kubernetes_auth == crate::config::KubernetesAuth::On;
    if kubernetes_auth {
        anyhow::bail!("--kubernetes-auth on needs a cluster; standalone has no Kubernetes API");
    }
    let guard = auth::guard(
        &args.serve.auth,
        args.serve.public_reads,
        &token,
        None,
        store.store().clone(),
        &metrics,
    )?;
    let maintain = maintain_state(&args.serve, &metrics, levels)?;
    let eve = args
        .serve
        .eve
        .settings()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let hostname: Arc<str> = hostname().into();
    let mut agent = if args.node.node_agent {
        let agent = standalone::agent::start(
            &args.node,
            standalone::agent::Shared {
                hostname: &hostname,
                data_dir: &data_dir,
                guard: guard.clone(),
                recorder: store.clone(),
                metrics: metrics.clone(),
                token: token.clone(),
                request_timeout: args.serve.request_timeout,
                listener: &args.serve.listener,
            },
        )
        .await?;
        let local_tasks = standalone::tasks::LocalTasks::new(
            store.store().clone(),
            agent.runner.clone(),
            agent.node.clone(),
            args.node.node_tasks,
            &data_dir.join("node"),
            &args.node.host_root,
            metrics.clone(),
        )
        .map_err(|e| anyhow::anyhow!("standalone NodeTasks: {e}"))?;
        let running = tokio::spawn(local_tasks.run());
        Some((agent, running))
    } else {
        tracing::info!("node agent off (--node-agent false): this host is not monitored");
        None
    };
    let resources = Backend::Local(Local {
        file_services: services,
        config: args.config.clone(),
        store: store.store().clone(),
        hostname: hostname.clone(),
    });
    let creating = tokio::spawn(create_file_tasks(resources.clone(), task_receiver));
    // Standalone has no Kubernetes API: notification checks announce through the webhook and
    // their state only, no Events.
    let notifying = tokio::spawn(
        notifier(
            &args.serve.notifications,
            store.clone(),
            metrics.clone(),
            None,
        )?
        .run(),
    );
    let state = AppState {
        maintain,
        resources,
        eve: Arc::new(eve),
        metrics,
        guard,
        ready: Arc::new(AtomicBool::new(true)),
        recorder: store,
        hostname,
        request_timeout: args.serve.request_timeout,
        ops: ops_of(&args.serve)?,
    };
    let platform_calls = tokio::spawn(crate::api::ops::connect::run_platform_calls(state.clone()));
    let result = serve(&args.serve, state, shutdown_signal()).await;
    platform_calls.abort();
    checks.abort();
    api_checks.abort();
    creating.abort();
    notifying.abort();
    if let Some((agent, tasks)) = &mut agent {
        tasks.abort();
        agent.stop();
    }
    result
}

/// Creates the NodeTasks of the standalone config file that do not exist yet, as
/// `POST /api/v1/tasks` does (validated, planned for this host); a task of that name that
/// exists already — created before by the file or the API — is left as it is.
async fn create_file_tasks(
    resources: Backend,
    mut lists: tokio::sync::mpsc::UnboundedReceiver<Vec<opsplane_resources::NodeTask>>,
) {
    use crate::api::resources::backend::BackendError;
    while let Some(tasks) = lists.recv().await {
        for task in tasks {
            let name = kube::ResourceExt::name_any(&task);
            let Ok(mut object) = serde_json::to_value(&task) else {
                continue;
            };
            if let Some(map) = object.as_object_mut() {
                map.insert("apiVersion".into(), "opsplane.io/v1alpha1".into());
                map.insert("kind".into(), "NodeTask".into());
            }
            match resources
                .create(crate::api::resources::objects::Kind::Tasks, &object, false)
                .await
            {
                Ok(_) => tracing::info!(task = %name, "NodeTask of the config file created"),
                Err(BackendError::Exists(_)) => {}
                Err(error) => {
                    tracing::warn!(task = %name, %error, "cannot create the config file's NodeTask")
                }
            }
        }
    }
}

async fn run_cluster(args: ClusterArgs, levels: LogLevels) -> anyhow::Result<()> {
    let token = token_from_env().context(
        "OPSPLANE_TOKEN is not set: the API needs a token for writes (the Helm chart sets it from a Secret)",
    )?;
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let metrics = Metrics::new()?;
    let store = open_store(
        &args.serve.store,
        PathBuf::from("/var/lib/opsplane/store.redb"),
        &metrics,
    )
    .await?;
    let ready = Arc::new(AtomicBool::new(false));
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let lease = LeaseConfig {
        namespace: args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        name: args.lease_name.clone(),
        identity,
        lease_duration: Duration::from_secs(args.lease_duration_seconds),
        renew_every: Duration::from_secs((args.lease_duration_seconds / 3).max(1)),
    };
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "opsplane-operator".into(),
            instance: Some(lease.identity.clone()),
        },
    );
    let ctx = Arc::new(Context {
        recorder,
        node_task_poll: args.node_task_poll,
        // Evictions answer 429 while a PodDisruptionBudget refuses; the default client retries
        // a 429 with back-off inside the call, which would stall the reconcile instead of
        // reporting the budget. This one says it at once.
        eviction_client: {
            let mut config = kube::Config::infer()
                .await
                .context("Kubernetes client configuration")?;
            config.default_retry = false;
            kube::Client::try_from(config)?
        },
        http: reqwest::Client::builder()
            .user_agent(concat!("opsplane-operator/", env!("CARGO_PKG_VERSION")))
            .build()?,
        last_checks: Default::default(),
        client: client.clone(),
        clients: check::Clients::new()?,
        metrics: metrics.clone(),
        store: store.clone(),
    });
    let reviewer: Option<Arc<dyn opsplane_serve::auth::Reviewer>> =
        match args.serve.auth.kubernetes_auth {
            crate::config::KubernetesAuth::Off => None,
            _ => Some(Arc::new(auth::KubeReviewer::new(client.clone()))),
        };
    let guard = auth::guard(
        &args.serve.auth,
        args.serve.public_reads,
        &token,
        reviewer,
        store.store().clone(),
        &metrics,
    )?;
    let eve = args
        .serve
        .eve
        .settings()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let state = AppState {
        maintain: maintain_state(&args.serve, &metrics, levels)?,
        resources: Backend::cluster(client.clone()),
        eve: Arc::new(eve),
        metrics: metrics.clone(),
        guard,
        ready: ready.clone(),
        recorder: store,
        hostname: hostname().into(),
        request_timeout: args.serve.request_timeout,
        ops: ops_of(&args.serve)?,
    };
    let probe_client = client.clone();
    let ready_flag = ready.clone();
    tokio::spawn(async move {
        loop {
            if probe_client.apiserver_version().await.is_ok() {
                ready_flag.store(true, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // Events of notification checks are about the leader's Lease: the object whose holder
    // evaluated them.
    let lease_ref = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        name: Some(lease.name.clone()),
        namespace: Some(lease.namespace.clone()),
        ..Default::default()
    };
    let notifier = notifier(
        &args.serve.notifications,
        ctx.store.clone(),
        metrics.clone(),
        Some((ctx.recorder.clone(), lease_ref)),
    )?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let election = tokio::spawn(lead(
        Elector::new(client, lease),
        ctx,
        notifier,
        state.clone(),
        stopped,
    ));
    // Graceful stop: on the signal, hand the Lease over at once (the standby takes over while
    // requests in flight finish here), then wait for both.
    let on_signal = async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    };
    let result = serve(&args.serve, state, on_signal).await;
    let _ = election.await;
    result
}

/// Campaigns for the Lease until `stop` fires; runs the controllers, the notification checks
/// and the ops API's calls to the platform while leading. On stop, stops them and releases the
/// Lease so the next candidate takes over at once.
async fn lead(
    mut elector: Elector,
    ctx: Arc<Context>,
    notifier: Arc<Notifier>,
    api: AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let config = elector.config().clone();
    tracing::info!(identity = %config.identity, lease = %format!("{}/{}", config.namespace, config.name), "campaigning for leadership");
    let mut controllers: Option<tokio::task::JoinHandle<()>> = None;
    let mut last_renewal: Option<Instant> = None;
    loop {
        let held = match elector.try_acquire_or_renew().await {
            Ok(held) => {
                if held {
                    last_renewal = Some(Instant::now());
                }
                held
            }
            Err(error) => {
                tracing::warn!(%error, "leader election: cannot reach the Lease");
                // Keep leading only while the last renewal is fresh enough that nobody else can
                // have taken over yet.
                last_renewal.is_some_and(|t| t.elapsed() < config.lease_duration * 2 / 3)
            }
        };
        match (held, controllers.is_some()) {
            (true, false) => {
                tracing::info!(identity = %config.identity, "became leader; starting controllers");
                ctx.metrics.leader.set(1);
                // Only the leader evaluates notification checks (one webhook call and one
                // Event per change) and reports to the UtilMeta platform (one report per hour),
                // whatever the number of replicas.
                let (ctx, notifier, api) = (ctx.clone(), notifier.clone(), api.clone());
                controllers = Some(tokio::spawn(async move {
                    tokio::join!(
                        controller::run(ctx),
                        notifier.run(),
                        crate::api::ops::connect::run_platform_calls(api)
                    );
                }));
            }
            (false, true) => {
                tracing::warn!(identity = %config.identity, "lost leadership; stopping controllers");
                ctx.metrics.leader.set(0);
                if let Some(running) = controllers.take() {
                    running.abort();
                }
                last_renewal = None;
            }
            _ => {}
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(config.renew_every) => {}
        }
    }
    if let Some(running) = controllers.take() {
        running.abort();
        ctx.metrics.leader.set(0);
        match tokio::time::timeout(Duration::from_secs(3), elector.release()).await {
            Ok(Ok(())) => tracing::info!("released the leader Lease"),
            Ok(Err(error)) => tracing::warn!(%error, "could not release the leader Lease"),
            Err(_) => tracing::warn!("timed out releasing the leader Lease"),
        }
    }
}

/// The evaluator of notification checks from its flags.
fn notifier(
    args: &config::NotificationArgs,
    recorder: recorder::Recorder,
    metrics: Metrics,
    events: Option<(
        kube::runtime::events::Recorder,
        k8s_openapi::api::core::v1::ObjectReference,
    )>,
) -> anyhow::Result<Arc<Notifier>> {
    anyhow::ensure!(
        !args.notification_interval.is_zero(),
        "--notification-interval must be longer than 0s"
    );
    anyhow::ensure!(
        !args.notification_webhook_timeout.is_zero(),
        "--notification-webhook-timeout must be longer than 0s"
    );
    if let Some(url) = &args.notification_webhook {
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "--notification-webhook must be an http or https URL"
        );
    }
    Ok(Arc::new(Notifier {
        recorder,
        metrics,
        interval: args.notification_interval,
        webhook: args.notification_webhook.clone(),
        http: reqwest::Client::builder()
            .user_agent(concat!("opsplane-operator/", env!("CARGO_PKG_VERSION")))
            .timeout(args.notification_webhook_timeout)
            .build()?,
        events,
    }))
}

/// The ops API's place (`--base-url`, `--ops-route`) and its document.
fn ops_of(serve: &config::ServeArgs) -> anyhow::Result<crate::api::ops::Ops> {
    use crate::api::ops;
    let location =
        ops::location::locate(serve.base_url.as_deref(), &serve.ops_route, serve.listen)?;
    let supervisor = match &serve.ops_supervisor_key {
        Some(key) => Some(ops::platform::Supervisor::load(
            key,
            serve.ops_node_id.as_deref(),
            &serve.ops_supervisor_url,
        )?),
        None => None,
    };
    let store = match &serve.store.redis_url {
        Some(url) => ops::servers::StoreInfo::redis(url),
        None => ops::servers::StoreInfo::Embedded,
    };
    let connection_key = match &serve.ops_connection_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("--ops-connection-key-file {}: {e}", path.display())
            })?;
            Some(ops::platform::ConnectionKey::new(&text).ok_or_else(|| {
                anyhow::anyhow!("--ops-connection-key-file {}: empty", path.display())
            })?)
        }
        None => serve.ops_connection_key.clone(),
    };
    let mut trusted_hosts = vec![ops::connect::PLATFORM_HOST.to_owned()];
    trusted_hosts.extend(serve.ops_trusted_hosts.iter().cloned());
    let outbound = ops::connect::Outbound {
        trusted_hosts,
        insecure: serve.ops_insecure_http,
        timeout: serve.ops_platform_timeout,
        interval: serve.ops_report_interval,
        clock_file: serve.ops_clock_file.clone(),
    };
    Ok(ops::Ops::new(location)
        .with_platform(&serve.ops_service, supervisor, serve.ops_local)
        .with_store(store)
        .with_connect(connection_key, outbound))
}
