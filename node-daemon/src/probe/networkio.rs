//! Cumulative bytes received and sent per interface from `/proc/net/dev` (seed 002 §二.7
//! `networkio`). All interfaces are listed, loopback included, as the seed's example shows.

use std::collections::BTreeMap;

pub use opsplane_resources::node_report::NicCounters;
use serde_json::Value;

use super::{Probe, ProbeError, Reading, first_fields, parse_u64, with_utc};
use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

const FILE: &str = "/proc/net/dev";

/// Counters by interface name; as the §四.1 report's `networkio` carries them.
pub type NetworkIo = BTreeMap<String, NicCounters>;

/// Reads [`NetworkIo`].
pub struct NetworkIoProbe;

impl Probe for NetworkIoProbe {
    type Reading = NetworkIo;
    fn failure(&self) -> Failure {
        Failure::Network
    }
    fn collect(&self, host: &HostRoot) -> Result<NetworkIo, ProbeError> {
        parse(&host.read(FILE)?)
    }
}

impl Reading for NetworkIo {
    fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
        with_utc(self, snapshot.utc)
    }
    fn write_metrics(&self, _snapshot: &Snapshot, out: &mut Exposition<'_>) {
        out.counter(
            "opsplane_node_network_receive_bytes_total",
            "Bytes received by the interface",
            self.iter()
                .map(|(d, c)| (vec![("device", d.clone())], c.bytes_recv as f64)),
        );
        out.counter(
            "opsplane_node_network_transmit_bytes_total",
            "Bytes sent by the interface",
            self.iter()
                .map(|(d, c)| (vec![("device", d.clone())], c.bytes_send as f64)),
        );
    }
}

/// Parses `/proc/net/dev`.
pub fn parse(text: &str) -> Result<NetworkIo, ProbeError> {
    let mut out = NetworkIo::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(fields) = first_fields::<9>(rest) else {
            return Err(ProbeError::format(FILE, format!("short line {line:?}")));
        };
        out.insert(
            name.trim().to_owned(),
            NicCounters {
                bytes_recv: parse_u64(FILE, fields[0])?,
                bytes_send: parse_u64(FILE, fields[8])?,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_receive_and_transmit_bytes_per_interface() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n";
        let io = parse(text).unwrap();
        assert_eq!(
            io["eth0"],
            NicCounters {
                bytes_recv: 5,
                bytes_send: 7
            }
        );
        assert_eq!(io["lo"].bytes_send, 100);
    }
}
