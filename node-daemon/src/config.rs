//! The node-daemon's configuration: flags and `OPSPLANE_*` environment variables, validated
//! at start with errors that name the flag. The table is in `node-daemon/README.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

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
    /// Bearer token the node API requires. Without a token (or token file) the node API
    /// refuses every request.
    #[arg(long, env = "OPSPLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token (a mounted Secret); used when --token is not given.
    #[arg(long, env = "OPSPLANE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
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
    /// Directory of the daemon's state (the report timer survives restarts here).
    #[arg(long, env = "OPSPLANE_STATE_DIR", default_value = "/var/lib/opsplane")]
    pub state_dir: PathBuf,
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
    pub fn resolve_token(&self) -> anyhow::Result<Option<String>> {
        if let Some(token) = self.token.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(token.to_owned()));
        }
        match &self.token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
                let token = token.trim().to_owned();
                if token.is_empty() {
                    anyhow::bail!("--token-file {} is empty", path.display());
                }
                Ok(Some(token))
            }
            None => Ok(None),
        }
    }

    /// The `--systemctl` command split into program and arguments.
    pub fn systemctl_command(&self) -> Vec<String> {
        self.systemctl
            .split_whitespace()
            .map(str::to_owned)
            .collect()
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
}
