//! The node-daemon's configuration: flags and `OPSPLANE_*` environment variables, validated
//! at start with errors that name the flag. The table is in `node-daemon/README.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use opsplane_serve::bearer::BearerToken;

/// opsplane node-daemon: probes this host and runs node tasks.
#[derive(Debug, Parser)]
#[command(name = "opsplane-node-daemon", version, about)]
pub struct Cli {
    /// Address of the node API, health and metrics (seed 002 uses port 6666).
    #[arg(long, env = "OPSPLANE_LISTEN", default_value = "127.0.0.1:6666")]
    pub listen: SocketAddr,
    /// Root of the host's filesystem as seen by the daemon (`/host` in the DaemonSet).
    #[arg(long, env = "OPSPLANE_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
    /// This node's name (the downward API's spec.nodeName in a cluster).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Log filter, e.g. `info` or `opsplane_node_daemon=debug`.
    #[arg(long, env = "OPSPLANE_LOG", default_value = "info")]
    pub log: String,
    /// Log line format: `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(long, env = "OPSPLANE_LOG_FORMAT", value_enum, default_value_t = opsplane_serve::logging::LogFormat::Text)]
    pub log_format: opsplane_serve::logging::LogFormat,
    /// Rate limits of the node API, `METHOD=COUNT/WINDOW,...` per client and method (`off`:
    /// none). The password check keeps its own, stricter limit.
    #[arg(long, env = "OPSPLANE_RATE_LIMIT", default_value = opsplane_serve::ratelimit::DEFAULT_RULES)]
    pub rate_limit: String,
    /// Requests one route of the node API may have in flight; beyond, 503 at once (0: no
    /// bound). `/healthz` is never bounded.
    #[arg(long, env = "OPSPLANE_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: u32,
    /// Longest a node API request may take before it is answered with 503 (code 99999).
    #[arg(long, env = "OPSPLANE_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Connection limits and timeouts of the listener.
    #[command(flatten)]
    pub listener: opsplane_serve::listener::ListenArgs,
    /// The maintain API's settings.
    #[command(flatten)]
    pub maintain: opsplane_serve::maintain::MaintainArgs,
    /// Bearer token the node API requires. Without a token (or token file) the node API
    /// refuses every request.
    #[arg(long, env = "OPSPLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token (a mounted Secret); used when --token is not given.
    #[arg(long, env = "OPSPLANE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Bearer token sent with reports (the operator's report token, role reporter: it may
    /// only post reports). Default: the node API token.
    #[arg(long, env = "OPSPLANE_REPORT_TOKEN", hide_env_values = true)]
    pub report_token: Option<String>,
    /// Bearer token that may read `/metrics` (role viewer: nothing else), for Prometheus.
    /// `/metrics` carries the host's inventory (addresses, MACs, gateways, mounts, hardware,
    /// services), so it needs this token or the node API token unless `--open-metrics`.
    #[arg(long, env = "OPSPLANE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Serve `/metrics` without a credential (the host inventory in it becomes readable by
    /// anyone who reaches the port).
    #[arg(long, env = "OPSPLANE_OPEN_METRICS")]
    pub open_metrics: bool,
    /// How often the probes sample the host (100ms to 30s).
    #[arg(long, env = "OPSPLANE_SAMPLE_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub sample_interval: Duration,
    /// Services the `service` endpoint reports, comma-separated (e.g. `libvirtd,sshd`).
    #[arg(long, env = "OPSPLANE_SERVICES", value_delimiter = ',')]
    pub services: Vec<String>,
    /// Command standing for `systemctl` (program and leading arguments, space-separated),
    /// e.g. `chroot /host systemctl` in a container.
    #[arg(long, env = "OPSPLANE_SYSTEMCTL", default_value = "systemctl")]
    pub systemctl: String,
    /// Command prefix that runs systemctl and the power command on the host (program and
    /// arguments, space-separated), put in front of `--systemctl` and `--power-command`, e.g.
    /// `nsenter --target 1 --mount --uts --ipc --net --pid --` in a DaemonSet with hostPID
    /// (kured's way into the host). Empty: both run as given.
    #[arg(long, env = "OPSPLANE_HOST_EXEC", default_value = "")]
    pub host_exec: String,
    /// How often systemctl is run for the service states (0s: every sampling cycle).
    #[arg(long, env = "OPSPLANE_SERVICE_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub service_interval: Duration,
    /// Report exactly these NICs in `network` instead of the physical-NIC rule.
    #[arg(long, env = "OPSPLANE_NICS", value_delimiter = ',')]
    pub nics: Option<Vec<String>>,
    /// ESTABLISHED connections a port needs for `port_status` to answer true (seed: 4).
    #[arg(long, env = "OPSPLANE_PORT_THRESHOLD", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub port_threshold: u32,
    /// Where resource and service reports (seed 002 §四) go, e.g. `http://opsplane-api:8080/`;
    /// empty: no reports until a TimerHandler update sets one.
    #[arg(long, env = "OPSPLANE_REPORT_ADDR", default_value = "")]
    pub report_addr: String,
    /// How often reports are sent.
    #[arg(long, env = "OPSPLANE_REPORT_INTERVAL", default_value = "30s", value_parser = parse_report_interval)]
    pub report_interval: Duration,
    /// How many reports wait at most while the receiver is down (the oldest is dropped beyond).
    #[arg(long, env = "OPSPLANE_REPORT_QUEUE", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub report_queue: u64,
    /// The node's UUID in reports; default: the host's /etc/machine-id, else the node name.
    #[arg(long, env = "OPSPLANE_NODE_UUID")]
    pub node_uuid: Option<String>,
    /// The IP in reports; default: NODE_IP (downward API), else empty.
    #[arg(long, env = "NODE_IP", default_value = "")]
    pub report_ip: String,
    /// Directory of the daemon's state (the report timer and scheduled shutdowns survive
    /// restarts here).
    #[arg(long, env = "OPSPLANE_STATE_DIR", default_value = "/var/lib/opsplane")]
    pub state_dir: PathBuf,
    /// Watch the NodeTasks released to this node and run them (`auto`: when `NODE_NAME` is set
    /// and a cluster is configured — in-cluster service account or `KUBECONFIG`; `on`; `off`).
    #[arg(long, env = "OPSPLANE_NODE_TASKS", default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub node_tasks: String,
    /// The task runner's safety switches and commands.
    #[command(flatten)]
    pub tasks: TaskArgs,
}

/// The task runner's safety switches and commands (seed 002 §三, §五, §二.12–15): every
/// disruptive or destructive command is refused (30004) until one of these allows it. Shared
/// with the operator's standalone mode, whose in-process node agent runs tasks through the same
/// runner with the same flags.
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    /// Allow disruptive tasks: OsHandler shutdown/reboot, CrontabHandler setup/modify_shutdown
    /// (and their firing), ServiceHandler stop/restart/disable. Off: refused with 30004.
    #[arg(long, env = "OPSPLANE_ALLOW_DISRUPTIVE")]
    pub allow_disruptive: bool,
    /// Directories (host paths, comma-separated) under which FileHandler delete_file may
    /// delete. None: delete_file refused with 30004. `/` is not accepted.
    #[arg(long, env = "OPSPLANE_ALLOW_DELETE_PREFIX", value_delimiter = ',')]
    pub allow_delete_prefix: Vec<PathBuf>,
    /// Allow delete_file to delete directories (recursively) under the prefixes.
    #[arg(long, env = "OPSPLANE_ALLOW_DELETE_DIRS")]
    pub allow_delete_dirs: bool,
    /// Command run for OsHandler and scheduled shutdowns (program and arguments,
    /// space-separated); `poweroff` or `reboot` is appended. In a container, `--host-exec`
    /// puts nsenter in front of it.
    #[arg(long, env = "OPSPLANE_POWER_COMMAND", default_value = "systemctl")]
    pub power_command: String,
    /// How long OsHandler waits after answering before it runs the power command (0s–60s).
    #[arg(long, env = "OPSPLANE_POWER_DELAY", default_value = "1s", value_parser = parse_power_delay)]
    pub power_delay: Duration,
    /// How long a power or systemctl command of a task may run (1s–1h).
    #[arg(long, env = "OPSPLANE_COMMAND_TIMEOUT", default_value = "120s", value_parser = parse_command_timeout)]
    pub command_timeout: Duration,
    /// Directory of the IP configurations (`ifcfg-<name>` files) of add_ip / update_ip /
    /// delete_ip / exchange_ip. Unset: IP tasks refused with 30004.
    #[arg(long, env = "OPSPLANE_IP_CONFIG_DIR")]
    pub ip_config_dir: Option<PathBuf>,
    /// Turn verify_password on (checked against <host-root>/etc/shadow). Off: refused with 30004.
    #[arg(long, env = "OPSPLANE_PASSWORD_CHECK")]
    pub password_check: bool,
    /// Password checks allowed per client IP within --password-window.
    #[arg(long, env = "OPSPLANE_PASSWORD_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub password_attempts: u32,
    /// The password-check rate-limit window (1s–24h).
    #[arg(long, env = "OPSPLANE_PASSWORD_WINDOW", default_value = "60s", value_parser = parse_password_window)]
    pub password_window: Duration,
    /// The task audit log (JSON lines); default `<state-dir>/task-audit.log`.
    #[arg(long, env = "OPSPLANE_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Time zone of scheduled shutdowns (IANA name such as `Asia/Shanghai`); default the
    /// host's `<host-root>/etc/localtime`, else the daemon's own.
    #[arg(long, env = "OPSPLANE_TIME_ZONE")]
    pub time_zone: Option<String>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(30) {
        return Err(format!("{text} is outside 100ms..=30s"));
    }
    Ok(d)
}

impl Cli {
    /// The bearer token from `--token` or `--token-file`.
    ///
    /// White space around the token is removed (a Secret made from a file often ends in a
    /// newline, which no client sends), with a warning when there was some.
    pub fn resolve_token(&self) -> anyhow::Result<Option<BearerToken>> {
        let token = match (self.token.as_deref(), &self.token_file) {
            (Some(raw), _) if !raw.is_empty() => BearerToken::from_config(raw)
                .map_err(|_| anyhow::anyhow!("--token / OPSPLANE_TOKEN is only white space"))?,
            (_, Some(path)) => {
                let raw = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
                let token = BearerToken::from_config(&raw)
                    .map_err(|_| anyhow::anyhow!("--token-file {} is empty", path.display()))?;
                // A file's final newline is expected; only other white space is worth a word.
                if raw.trim_end_matches('\n').len() != token.expose().len() {
                    tracing::warn!(path = %path.display(), "the token file has white space around the token; it was removed");
                }
                return Ok(Some(token));
            }
            _ => return Ok(None),
        };
        if token.was_trimmed() {
            tracing::warn!("--token / OPSPLANE_TOKEN has white space around it; it was removed");
        }
        Ok(Some(token))
    }

    /// The `--metrics-token`, trimmed; an empty one is refused.
    pub fn resolve_metrics_token(&self) -> anyhow::Result<Option<BearerToken>> {
        let Some(raw) = self.metrics_token.as_deref() else {
            return Ok(None);
        };
        let token = BearerToken::from_config(raw).map_err(|_| {
            anyhow::anyhow!("--metrics-token / OPSPLANE_METRICS_TOKEN is empty or only white space")
        })?;
        if token.was_trimmed() {
            tracing::warn!(
                "--metrics-token / OPSPLANE_METRICS_TOKEN has white space around it; it was removed"
            );
        }
        Ok(Some(token))
    }

    /// The `--systemctl` command split into program and arguments, behind `--host-exec`.
    pub fn systemctl_command(&self) -> Vec<String> {
        self.on_host(&self.systemctl)
    }

    /// `--host-exec` followed by `command`, split at white space.
    fn on_host(&self, command: &str) -> Vec<String> {
        self.host_exec
            .split_whitespace()
            .chain(command.split_whitespace())
            .map(str::to_owned)
            .collect()
    }
}

fn parse_bounded(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < min || d > max {
        return Err(format!(
            "{text:?} is outside {}..={}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

fn parse_power_delay(text: &str) -> Result<Duration, String> {
    parse_bounded(text, Duration::ZERO, Duration::from_secs(60))
}

fn parse_command_timeout(text: &str) -> Result<Duration, String> {
    parse_bounded(text, Duration::from_secs(1), Duration::from_secs(3600))
}

fn parse_password_window(text: &str) -> Result<Duration, String> {
    parse_bounded(text, Duration::from_secs(1), Duration::from_secs(86_400))
}

impl Cli {
    /// The task runner's settings, checked: errors name the flag.
    pub fn task_settings(&self) -> anyhow::Result<crate::task::TaskSettings> {
        self.tasks.settings(
            &self.host_root,
            &self.state_dir,
            &self.systemctl,
            &self.host_exec,
        )
    }
}

impl TaskArgs {
    /// The task runner's settings over `host_root` and `state_dir`, with `systemctl` (program
    /// and leading arguments, space-separated) for ServiceHandler, it and the power command run
    /// behind `host_exec` (a command prefix reaching the host, e.g. nsenter; empty: none);
    /// errors name the flag.
    pub fn settings(
        &self,
        host_root: &std::path::Path,
        state_dir: &std::path::Path,
        systemctl: &str,
        host_exec: &str,
    ) -> anyhow::Result<crate::task::TaskSettings> {
        let mut settings = crate::task::TaskSettings::new(host_root, state_dir);
        for prefix in &self.allow_delete_prefix {
            if !prefix.is_absolute() {
                anyhow::bail!(
                    "--allow-delete-prefix {}: must be an absolute host path",
                    prefix.display()
                );
            }
            if crate::task::file::normalize(prefix) == std::path::Path::new("/") {
                anyhow::bail!(
                    "--allow-delete-prefix {}: / is not accepted",
                    prefix.display()
                );
            }
        }
        let split = |text: &str, flag: &str| -> anyhow::Result<Vec<String>> {
            if text.split_whitespace().next().is_none() {
                anyhow::bail!("{flag} is empty");
            }
            Ok(host_exec
                .split_whitespace()
                .chain(text.split_whitespace())
                .map(str::to_owned)
                .collect())
        };
        settings.allow_disruptive = self.allow_disruptive;
        settings.delete_prefixes = self.allow_delete_prefix.clone();
        settings.allow_delete_dirs = self.allow_delete_dirs;
        settings.power_command = split(&self.power_command, "--power-command")?;
        settings.power_delay = self.power_delay;
        settings.systemctl = split(systemctl, "--systemctl")?;
        settings.command_timeout = self.command_timeout;
        if let Some(dir) = &self.ip_config_dir
            && !dir.is_absolute()
        {
            anyhow::bail!(
                "--ip-config-dir {}: must be an absolute path",
                dir.display()
            );
        }
        settings.ip_config_dir = self.ip_config_dir.clone();
        settings.password_check = self.password_check;
        settings.password_attempts = self.password_attempts;
        settings.password_window = self.password_window;
        if let Some(path) = &self.audit_log {
            settings.audit_log = path.clone();
        }
        settings.time_zone = match &self.time_zone {
            Some(name) => jiff::tz::TimeZone::get(name)
                .map_err(|e| anyhow::anyhow!("--time-zone {name}: {e}"))?,
            None => match std::fs::read(host_root.join("etc/localtime")) {
                Ok(bytes) => jiff::tz::TimeZone::tzif("localtime", &bytes)
                    .unwrap_or_else(|_| jiff::tz::TimeZone::system()),
                Err(_) => jiff::tz::TimeZone::system(),
            },
        };
        Ok(settings)
    }
}

fn parse_report_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(86_400) {
        return Err(format!(
            "{text:?}: the report interval must be between 100ms and 24h"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_seed() {
        let cli = Cli::try_parse_from(["d"]).unwrap();
        assert_eq!(cli.port_threshold, 4);
        assert_eq!(cli.sample_interval, Duration::from_secs(1));
        assert_eq!(cli.listen.port(), 6666);
    }

    #[test]
    fn lists_and_intervals_are_parsed_and_checked() {
        let cli = Cli::try_parse_from([
            "d",
            "--services",
            "libvirtd,sshd",
            "--sample-interval",
            "500ms",
            "--systemctl",
            "chroot /host systemctl",
        ])
        .unwrap();
        assert_eq!(cli.services, ["libvirtd", "sshd"]);
        assert_eq!(cli.sample_interval, Duration::from_millis(500));
        assert_eq!(cli.systemctl_command(), ["chroot", "/host", "systemctl"]);
        let err = Cli::try_parse_from(["d", "--sample-interval", "2m"]).unwrap_err();
        assert!(err.to_string().contains("sample-interval"), "{err}");
        assert!(Cli::try_parse_from(["d", "--port-threshold", "0"]).is_err());
    }

    #[test]
    fn host_exec_goes_in_front_of_systemctl_and_the_power_command_only() {
        let nsenter = "nsenter --target 1 --mount --uts --ipc --net --pid --";
        let cli = Cli::try_parse_from([
            "d",
            "--host-exec",
            nsenter,
            "--power-command",
            "/bin/systemctl",
        ])
        .unwrap();
        let prefix: Vec<&str> = nsenter.split(' ').collect();
        let with = |tail: &[&str]| -> Vec<String> {
            prefix.iter().chain(tail).map(|s| s.to_string()).collect()
        };
        assert_eq!(cli.systemctl_command(), with(&["systemctl"]));
        let s = cli.task_settings().unwrap();
        assert_eq!(s.systemctl, with(&["systemctl"]));
        assert_eq!(s.power_command, with(&["/bin/systemctl"]));
        // Unset (the default): the commands run as given.
        let cli = Cli::try_parse_from(["d"]).unwrap();
        assert_eq!(cli.systemctl_command(), ["systemctl"]);
        assert_eq!(cli.task_settings().unwrap().power_command, ["systemctl"]);
    }

    #[test]
    fn task_flags_default_to_safe_and_are_checked() {
        let cli = Cli::try_parse_from(["d", "--host-root", "/nonexistent"]).unwrap();
        let s = cli.task_settings().unwrap();
        assert!(!s.allow_disruptive && !s.password_check && !s.allow_delete_dirs);
        assert!(s.delete_prefixes.is_empty() && s.ip_config_dir.is_none());
        assert_eq!(s.power_command, ["systemctl"]);
        assert_eq!(
            s.audit_log,
            PathBuf::from("/var/lib/opsplane/task-audit.log")
        );
        let cli = Cli::try_parse_from([
            "d",
            "--allow-disruptive",
            "--allow-delete-prefix",
            "/var/tmp/a,/srv/b",
            "--power-command",
            "chroot /host systemctl",
            "--password-window",
            "10m",
            "--time-zone",
            "UTC",
        ])
        .unwrap();
        let s = cli.task_settings().unwrap();
        assert!(s.allow_disruptive);
        assert_eq!(
            s.delete_prefixes,
            [PathBuf::from("/var/tmp/a"), PathBuf::from("/srv/b")]
        );
        assert_eq!(s.power_command, ["chroot", "/host", "systemctl"]);
        assert_eq!(s.password_window, Duration::from_secs(600));
        for bad in [
            &["d", "--allow-delete-prefix", "/tmp/../"][..],
            &["d", "--allow-delete-prefix", "tmp"][..],
            &["d", "--ip-config-dir", "rel"][..],
            &["d", "--time-zone", "Mars/Olympus"][..],
        ] {
            let error = Cli::try_parse_from(bad)
                .unwrap()
                .task_settings()
                .unwrap_err();
            assert!(error.to_string().contains(bad[1]), "{error}");
        }
        assert!(Cli::try_parse_from(["d", "--power-delay", "2m"]).is_err());
        assert!(
            Cli::try_parse_from([
                "d",
                "--host-exec",
                "nsenter -t 1 --",
                "--power-command",
                " "
            ])
            .unwrap()
            .task_settings()
            .unwrap_err()
            .to_string()
            .contains("--power-command")
        );
        assert!(Cli::try_parse_from(["d", "--password-attempts", "0"]).is_err());
    }
}
