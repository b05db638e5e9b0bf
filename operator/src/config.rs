//! The operator's configuration: flags, `OPSPLANE_*` environment variables, subcommands.
//! README.md "Configuration" documents the same table.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// opsplane operator: MonitoredService and NodeTask controllers plus the REST API.
#[derive(Debug, Parser)]
#[command(name = "opsplane-operator", version, about)]
pub struct Cli {
    /// What to run; without a subcommand, the in-cluster operator.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of the in-cluster operator (the default mode).
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Modes besides the in-cluster default.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every CustomResourceDefinition as YAML (or write one file per CRD with --out-dir).
    Crds {
        /// Write `<name>.yaml` files into these directories instead of printing.
        #[arg(long = "out-dir")]
        out_dirs: Vec<PathBuf>,
    },
    /// Run without Kubernetes: checks of the MonitoredServices in --config, and the API.
    Standalone(Box<StandaloneArgs>),
    /// The UtilMeta platform (seed 000), through a running operator's ops API.
    #[command(subcommand)]
    Ops(OpsCommand),
}

/// What `opsplane-operator ops` does.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Connect this service to the UtilMeta platform, as UtilMeta's `meta connect`: the running
    /// operator stores a pending supervisor and announces the node to it
    /// (`POST <ops_api>/connect`, docs/ops.md).
    Connect {
        /// The access key the platform shows (an RSA public JWK, or base64 of one).
        #[arg(long)]
        key: String,
        /// The supervisor's URL.
        #[arg(long, default_value = "https://api.utilmeta.com/spv")]
        to: String,
        /// The running operator's ops_api.
        #[arg(
            long,
            env = "OPSPLANE_OPS_API",
            default_value = "http://127.0.0.1:8080/ops"
        )]
        ops_api: String,
        /// An admin token of the running operator.
        #[arg(long = "token", env = "OPSPLANE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// Settings shared by every serving mode.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address of the REST API, health and metrics.
    #[arg(long, env = "OPSPLANE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Serve reads (GET) without a credential. Writes always need one.
    #[arg(long, env = "OPSPLANE_PUBLIC_READS", default_value_t = false)]
    pub public_reads: bool,
    /// Log filter, e.g. `info` or `opsplane_operator=debug,kube=warn`.
    #[arg(long, env = "OPSPLANE_LOG", default_value = "info")]
    pub log: String,
    /// Log line format: `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(long, env = "OPSPLANE_LOG_FORMAT", value_enum, default_value_t = opsplane_serve::logging::LogFormat::Text)]
    pub log_format: opsplane_serve::logging::LogFormat,
    /// Longest a request may take before it is answered with 503 in its API's envelope.
    #[arg(long, env = "OPSPLANE_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// The metric store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Credentials and rate limits.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Connection limits and timeouts of the listener.
    #[command(flatten)]
    pub listener: opsplane_serve::listener::ListenArgs,
    /// The maintain API's shared settings.
    #[command(flatten)]
    pub maintain: opsplane_serve::maintain::MaintainArgs,
    /// The maintain API counts a node as gone (cleanable) when it has not reported for this.
    #[arg(long, env = "OPSPLANE_MAINTAIN_STALE_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub maintain_stale_after: std::time::Duration,
    /// CORS and cache headers of the Eve API.
    #[command(flatten)]
    pub eve: EveArgs,
    /// The URL clients reach this API at (seed 000 `base_url`): the OpenAPI document's only
    /// server, its paths re-based to it (paths outside it are left out, with a warning).
    /// Default: `http://<--listen>`.
    #[arg(long, env = "OPSPLANE_BASE_URL")]
    pub base_url: Option<String>,
    /// Where the ops API lives (seed 000 `route`): below --base-url, or an absolute URL.
    #[arg(long, env = "OPSPLANE_OPS_ROUTE", default_value = "ops")]
    pub ops_route: String,
    /// The UtilMeta platform's supervisor public key (an RSA public key in PEM): ops requests
    /// with a token it signed (RS256 JWS, seed 000) are accepted with the token's scopes.
    /// Needs --ops-node-id.
    #[arg(long, env = "OPSPLANE_OPS_SUPERVISOR_KEY")]
    pub ops_supervisor_key: Option<PathBuf>,
    /// The node id the platform gave this service: its tokens' `nid`, sent as `X-Node-ID`.
    #[arg(long, env = "OPSPLANE_OPS_NODE_ID")]
    pub ops_node_id: Option<String>,
    /// The supervisor's base URL; a token's `iss` must be a prefix of it.
    #[arg(
        long,
        env = "OPSPLANE_OPS_SUPERVISOR_URL",
        default_value = "https://api.utilmeta.com/spv"
    )]
    pub ops_supervisor_url: String,
    /// UtilMeta's local node: with ops_api on 127.0.0.1/localhost, a request from 127.0.0.1
    /// without any credential gets every ops scope (ops routes only).
    #[arg(long, env = "OPSPLANE_OPS_LOCAL", default_value_t = false)]
    pub ops_local: bool,
    /// The service name the ops API reports (`GET <ops_api>/`).
    #[arg(long, env = "OPSPLANE_OPS_SERVICE", default_value = "opsplane")]
    pub ops_service: String,
    /// The local node's connection key: with --ops-local, a request from 127.0.0.1 must carry
    /// it in `X-UtilMeta-Connection-Key` (401 `connection_key_missing`/`_wrong` otherwise). A
    /// secret: give it in the environment rather than on the command line, or use
    /// --ops-connection-key-file.
    #[arg(long, env = "OPSPLANE_OPS_CONNECTION_KEY", hide_env_values = true, value_parser = parse_connection_key)]
    pub ops_connection_key: Option<crate::api::ops::platform::ConnectionKey>,
    /// A file holding the connection key (its surrounding whitespace is not part of it).
    #[arg(
        long,
        env = "OPSPLANE_OPS_CONNECTION_KEY_FILE",
        conflicts_with = "ops_connection_key"
    )]
    pub ops_connection_key_file: Option<PathBuf>,
    /// Hosts (and their subdomains) the ops API may call when connecting to the UtilMeta
    /// platform (`POST <ops_api>/connect`) and pushing resources and reports; `utilmeta.com` is
    /// always trusted.
    #[arg(
        long = "ops-trusted-host",
        env = "OPSPLANE_OPS_TRUSTED_HOSTS",
        value_delimiter = ','
    )]
    pub ops_trusted_hosts: Vec<String>,
    /// Allow plain http for those calls (tests, a supervisor on loopback); https otherwise.
    #[arg(long, env = "OPSPLANE_OPS_INSECURE_HTTP", default_value_t = false)]
    pub ops_insecure_http: bool,
    /// Longest one call to the platform may take.
    #[arg(long, env = "OPSPLANE_OPS_PLATFORM_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ops_platform_timeout: std::time::Duration,
    /// How often connected supervisors get what they have not acknowledged yet: the resources,
    /// and each completed hour's request aggregate (`POST <supervisor>/report`); failed calls
    /// are tried again at the next round.
    #[arg(long, env = "OPSPLANE_OPS_REPORT_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub ops_report_interval: std::time::Duration,
    /// Tests only: a file holding epoch seconds that the rounds take as "now" when they work
    /// out which hourly and daily reports are due (read each round).
    #[arg(long, env = "OPSPLANE_OPS_CLOCK_FILE", hide = true)]
    pub ops_clock_file: Option<PathBuf>,
    /// Notification checks (`/monitoring/api/notifications/`).
    #[command(flatten)]
    pub notifications: NotificationArgs,
}

/// How notification checks are evaluated and announced (docs/monitoring.md, "Notifications").
#[derive(Debug, Args, Clone)]
pub struct NotificationArgs {
    /// How often every active notification check is evaluated (by the leader in a cluster).
    #[arg(long, env = "OPSPLANE_NOTIFICATION_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub notification_interval: std::time::Duration,
    /// A URL that gets a POST with a JSON body each time a check starts or stops firing.
    /// Failures are counted in `opsplane_notification_webhooks_total{result="error"}`.
    #[arg(long, env = "OPSPLANE_NOTIFICATION_WEBHOOK")]
    pub notification_webhook: Option<url::Url>,
    /// Longest one webhook call may take.
    #[arg(long, env = "OPSPLANE_NOTIFICATION_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub notification_webhook_timeout: std::time::Duration,
}

/// The configurable behaviour of the Eve API at `/api/v1` (docs/api.md).
#[derive(Debug, Args, Clone, Default)]
pub struct EveArgs {
    /// Comma-separated origins allowed by CORS (Eve's `X_DOMAINS`); `*` allows any. Empty: no
    /// CORS headers.
    #[arg(long, env = "OPSPLANE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// A regular expression of origins allowed by CORS, matched against the whole origin (Eve's
    /// `X_DOMAINS_RE`).
    #[arg(long, env = "OPSPLANE_CORS_ORIGIN_REGEX")]
    pub cors_origin_regex: Option<String>,
    /// `Cache-Control` of GET answers: `max-age=20` for every resource, or per resource
    /// `services=max-age=20;tasks=no-cache;*=max-age=5`. Empty: none.
    #[arg(long, env = "OPSPLANE_CACHE_CONTROL", default_value = "")]
    pub cache_control: String,
    /// `Expires` of GET answers in seconds from now: `20`, or per resource `services=20;*=5`.
    #[arg(long, env = "OPSPLANE_CACHE_EXPIRES", default_value = "")]
    pub cache_expires: String,
}

/// `value` or `resource=value;...;*=value` as a map from resource (`*` for the rest).
fn per_resource(text: &str) -> std::collections::HashMap<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Default::default();
    }
    let looks_per_resource = text.split(';').all(|part| {
        part.split_once('=').is_some_and(|(k, _)| {
            k == "*"
                || k.chars().all(|c| c.is_ascii_lowercase())
                    && !k.is_empty()
                    && !part.starts_with("max-age")
        })
    });
    if !looks_per_resource {
        return [("*".to_string(), text.to_string())].into();
    }
    text.split(';')
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl EveArgs {
    /// The settings, checked: a bad regex or a non-numeric expiry names its flag.
    pub fn settings(&self) -> Result<crate::api::resources::render::Settings, String> {
        let cors_origin_regex = match &self.cors_origin_regex {
            Some(re) => {
                Some(regex::Regex::new(re).map_err(|e| format!("--cors-origin-regex: {e}"))?)
            }
            None => None,
        };
        let mut cache_expires = std::collections::HashMap::new();
        for (k, v) in per_resource(&self.cache_expires) {
            let secs: u64 = v
                .parse()
                .map_err(|_| format!("--cache-expires: {v:?} is not a number of seconds"))?;
            cache_expires.insert(k, secs);
        }
        Ok(crate::api::resources::render::Settings {
            cors_origins: self
                .cors_origins
                .iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            cors_origin_regex,
            cache_control: per_resource(&self.cache_control),
            cache_expires,
        })
    }
}

/// Who may call the API and how often (docs/auth.md).
#[derive(Debug, Args, Clone)]
pub struct AuthArgs {
    /// YAML list of bearer tokens: `- {name: ci, role: operator, token: ...}` (or `sha256:`
    /// instead of `token:`). Roles: viewer, operator, admin, reporter. `OPSPLANE_TOKEN` stays
    /// valid as the admin token.
    #[arg(long, env = "OPSPLANE_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// htpasswd file of bcrypt hashes (`htpasswd -B`) for HTTP Basic; a line may end in
    /// `:role` (viewer when absent).
    #[arg(long, env = "OPSPLANE_USERS_FILE")]
    pub users_file: Option<PathBuf>,
    /// YAML list of Eve HMAC users: `- {user: eve-client, role: operator, secret: ...}`.
    #[arg(long, env = "OPSPLANE_HMAC_FILE")]
    pub hmac_file: Option<PathBuf>,
    /// The token node-daemons report with (role reporter: it may only `POST /`).
    #[arg(long, env = "OPSPLANE_REPORT_TOKEN", hide_env_values = true)]
    pub report_token: Option<String>,
    /// Accept Kubernetes tokens (ServiceAccounts, users) through TokenReview and decide with
    /// SubjectAccessReview: `auto` = in a cluster.
    #[arg(long, env = "OPSPLANE_KUBERNETES_AUTH", value_enum, default_value_t = KubernetesAuth::Auto)]
    pub kubernetes_auth: KubernetesAuth,
    /// Rate limits, `[role:]METHOD=COUNT/WINDOW,...` per client (the principal, else the
    /// client IP) and method; `off` turns them off.
    #[arg(long, env = "OPSPLANE_RATE_LIMIT", default_value = opsplane_serve::ratelimit::DEFAULT_RULES)]
    pub rate_limit: String,
    /// Requests one route may have in flight; beyond, 503 with `Retry-After: 1` at once
    /// instead of an ever longer queue (0: no bound). Health and metrics are never bounded.
    #[arg(long, env = "OPSPLANE_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: u32,
    /// Failed authentications allowed per client IP, `COUNT/WINDOW`; beyond, its requests with
    /// credentials are refused with 429 until the window ends.
    #[arg(long, env = "OPSPLANE_AUTH_FAILURE_LIMIT", default_value = "20/1m")]
    pub auth_failure_limit: String,
    /// When the rate limiter's store is unreachable: `open` serves unlimited, `closed` answers
    /// 503.
    #[arg(long, env = "OPSPLANE_RATE_LIMIT_ON_ERROR", value_enum, default_value_t = opsplane_serve::ratelimit::OnError::Open)]
    pub rate_limit_on_error: opsplane_serve::ratelimit::OnError,
    /// Proxies (CIDRs, comma-separated) whose `X-Forwarded-For` names the client.
    #[arg(long, env = "OPSPLANE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Whether Kubernetes tokens are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KubernetesAuth {
    /// In a cluster, not standalone.
    Auto,
    /// Always (fails at start without a Kubernetes client).
    On,
    /// Never.
    Off,
}

/// Where metrics, registries and exceptions are kept.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Redis URL (`redis://host:6379/0`, `rediss://` for TLS). Unset: the embedded store.
    #[arg(long, env = "OPSPLANE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// File of the embedded store (used when no Redis URL is set). Default: `store.redb` in
    /// the data directory (standalone) or `/var/lib/opsplane/store.redb` (in a cluster).
    #[arg(long, env = "OPSPLANE_STORE_PATH")]
    pub store_path: Option<PathBuf>,
    /// How long 1-minute buckets are kept, e.g. `2d`.
    #[arg(long, env = "OPSPLANE_RETENTION_MINUTES", default_value = "2d", value_parser = humantime::parse_duration)]
    pub retention_minutes: std::time::Duration,
    /// How long 1-hour roll-ups are kept, e.g. `90d`.
    #[arg(long, env = "OPSPLANE_RETENTION_HOURS", default_value = "90d", value_parser = humantime::parse_duration)]
    pub retention_hours: std::time::Duration,
    /// Most labels and resources one ingestion request or report may add to the registries
    /// (each distinct user, user agent, path, ... is one; they are kept and listed by
    /// `/labels/`); beyond, the request is refused with 400.
    #[arg(long, env = "OPSPLANE_MAX_NEW_LABELS", default_value_t = crate::recorder::DEFAULT_MAX_NEW_NAMES)]
    pub max_new_labels: usize,
    /// Most labels one service's events may bring into the label registry (counted by the
    /// service that first named each label; pruned with their data); a request beyond is
    /// refused with 400. `0`: no limit.
    #[arg(long, env = "OPSPLANE_MAX_LABELS_PER_SERVICE", default_value_t = crate::recorder::DEFAULT_MAX_LABELS_PER_SERVICE)]
    pub max_labels_per_service: usize,
    /// Longest a Redis connect or command may take (then the call fails and the store's
    /// circuit breaker answers at once until Redis answers again: at the first timeout, or
    /// after three refused connections).
    #[arg(long, env = "OPSPLANE_STORE_TIMEOUT", default_value = "800ms", value_parser = humantime::parse_duration)]
    pub store_timeout: std::time::Duration,
    /// How long exception records are kept, e.g. `30d`.
    #[arg(long, env = "OPSPLANE_RETENTION_EXCEPTIONS", default_value = "30d", value_parser = humantime::parse_duration)]
    pub retention_exceptions: std::time::Duration,
    /// A GeoIP database in MaxMind DB format (e.g. GeoLite2-City.mmdb): ingested events
    /// without a country get `request.country` / `region` / `city` from their `ip`.
    #[arg(long, env = "OPSPLANE_GEOIP_DATABASE")]
    pub geoip_database: Option<PathBuf>,
}

impl StoreArgs {
    /// The retention as the store wants it; errors name the flag.
    pub fn retention(&self) -> Result<opsplane_store::Retention, String> {
        let secs = |d: std::time::Duration, flag: &str| {
            let s = d.as_secs() as i64;
            if s < 3600 {
                Err(format!("--{flag}: must be at least 1h"))
            } else {
                Ok(s)
            }
        };
        let r = opsplane_store::Retention {
            minutes: secs(self.retention_minutes, "retention-minutes")?,
            hours: secs(self.retention_hours, "retention-hours")?,
            exceptions: secs(self.retention_exceptions, "retention-exceptions")?,
        };
        if r.hours < r.minutes {
            return Err("--retention-hours: must be at least --retention-minutes".into());
        }
        Ok(r)
    }
}

/// In-cluster operator settings.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// Common serving settings.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(long, env = "OPSPLANE_LEASE_NAME", default_value = "opsplane-operator")]
    pub lease_name: String,
    /// Namespace of the Lease; defaults to POD_NAMESPACE, then `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Identity in the election; defaults to POD_NAME, then the host name and process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Lease stays valid without renewal; a crashed leader is replaced after this.
    #[arg(long, env = "OPSPLANE_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_duration_seconds: u64,
    /// How often a NodeTask in motion is looked at again (a drain, a node to come back, a hold
    /// to lift), 100ms-5m.
    #[arg(long, env = "OPSPLANE_NODE_TASK_POLL", default_value = "5s", value_parser = parse_node_task_poll)]
    pub node_task_poll: std::time::Duration,
}

fn parse_node_task_poll(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(300) {
        return Err(format!("{text:?} is outside 100ms-5m"));
    }
    Ok(d)
}

/// Standalone settings.
#[derive(Debug, Args, Clone)]
pub struct StandaloneArgs {
    /// Common serving settings.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// YAML file of MonitoredService and NodeTask manifests (documents separated by `---`).
    #[arg(long, env = "OPSPLANE_CONFIG")]
    pub config: PathBuf,
    /// How often the config file is checked for edits, in milliseconds.
    #[arg(long, env = "OPSPLANE_RELOAD_POLL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub reload_poll_ms: u64,
    /// Directory for local state (the generated API token when OPSPLANE_TOKEN is unset).
    #[arg(long, env = "OPSPLANE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node agent of this host, run in-process.
    #[command(flatten)]
    pub node: NodeAgentArgs,
}

/// Where the in-process node agent serves its seed 002 node API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeListen {
    /// Not served (probes, reports and NodeTasks still run).
    Off,
    /// On this address.
    On(SocketAddr),
}

fn parse_node_listen(text: &str) -> Result<NodeListen, String> {
    if text == "off" {
        return Ok(NodeListen::Off);
    }
    text.parse()
        .map(NodeListen::On)
        .map_err(|e| format!("{text:?}: {e} (an address such as 127.0.0.1:6666, or off)"))
}

fn parse_node_interval(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(86_400) {
        return Err(format!("{text:?} is outside 100ms..=24h"));
    }
    Ok(d)
}

/// The standalone node agent: the node-daemon's probes, node API, reports and task runner for
/// this host, in the operator's process (README "Configuration").
#[derive(Debug, Args, Clone)]
pub struct NodeAgentArgs {
    /// Run the node agent of this host (`false`: the API serves only the services' checks).
    #[arg(long, env = "OPSPLANE_NODE_AGENT", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub node_agent: bool,
    /// Address of the agent's seed 002 node API (`/api/v1/monitor/...`, `/metrics` of the
    /// probes), which takes the API's credentials; `off`: not served.
    #[arg(long, env = "OPSPLANE_NODE_LISTEN", default_value = "127.0.0.1:6666", value_parser = parse_node_listen)]
    pub node_listen: NodeListen,
    /// Root of the host's filesystem the probes read.
    #[arg(long, env = "OPSPLANE_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
    /// How often the probes sample the host (100ms to 30s).
    #[arg(long, env = "OPSPLANE_SAMPLE_INTERVAL", default_value = "1s", value_parser = parse_sample_interval)]
    pub sample_interval: std::time::Duration,
    /// How often the host's reports are recorded in the store (100ms to 24h).
    #[arg(long, env = "OPSPLANE_REPORT_INTERVAL", default_value = "30s", value_parser = parse_node_interval)]
    pub report_interval: std::time::Duration,
    /// systemd units the agent reports (seed 002 `service`), comma-separated.
    #[arg(
        long = "node-services",
        env = "OPSPLANE_NODE_SERVICES",
        value_delimiter = ','
    )]
    pub services: Vec<String>,
    /// Command standing for `systemctl` (program and leading arguments, space-separated), for
    /// the unit states and ServiceHandler tasks.
    #[arg(long, env = "OPSPLANE_SYSTEMCTL", default_value = "systemctl")]
    pub systemctl: String,
    /// Run NodeTasks (created through `/api/v1/tasks`) on this host. Off: a task is planned
    /// and then failed on this host with 30004, saying so.
    #[arg(long, env = "OPSPLANE_NODE_TASKS", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub node_tasks: bool,
    /// The task runner's safety switches, as the node-daemon's.
    #[command(flatten)]
    pub tasks: opsplane_node_daemon::config::TaskArgs,
}

fn parse_sample_interval(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(30) {
        return Err(format!("{text:?} is outside 100ms..=30s"));
    }
    Ok(d)
}

fn parse_connection_key(raw: &str) -> Result<crate::api::ops::platform::ConnectionKey, String> {
    crate::api::ops::platform::ConnectionKey::new(raw)
        .ok_or_else(|| "the connection key is empty".to_owned())
}

#[cfg(test)]
mod eve_args_tests {
    use super::*;

    #[test]
    fn cache_settings_are_one_value_or_per_resource() {
        let one = EveArgs {
            cache_control: "max-age=20".into(),
            cache_expires: "20".into(),
            ..EveArgs::default()
        }
        .settings()
        .unwrap();
        assert_eq!(one.cache_control["*"], "max-age=20");
        assert_eq!(one.cache_expires["*"], 20);
        let per = EveArgs {
            cache_control: "services=max-age=5;*=no-cache".into(),
            cache_expires: "services=5;*=0".into(),
            ..EveArgs::default()
        }
        .settings()
        .unwrap();
        assert_eq!(per.cache_control["services"], "max-age=5");
        assert_eq!(per.cache_control["*"], "no-cache");
        assert_eq!(per.cache_expires["services"], 5);
        let bad = EveArgs {
            cache_expires: "soon".into(),
            ..EveArgs::default()
        };
        assert!(bad.settings().unwrap_err().contains("--cache-expires"));
        let bad = EveArgs {
            cors_origin_regex: Some("(".into()),
            ..EveArgs::default()
        };
        assert!(bad.settings().unwrap_err().contains("--cors-origin-regex"));
    }
}
