//! The node-daemon's configuration: flags and `OPSPLANE_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

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
}
