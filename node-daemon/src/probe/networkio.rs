//! Cumulative bytes received and sent per interface from `/proc/net/dev` (seed 002 §二.7
//! `networkio`). All interfaces are listed, loopback included, as the seed's example shows.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Probe, ProbeError, Sample, first_fields, parse_u64};
use crate::error::Failure;
use crate::host::HostRoot;

const FILE: &str = "/proc/net/dev";

/// Bytes through one interface since it appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NicCounters {
    /// Bytes received.
    pub bytes_recv: u64,
    /// Bytes sent.
    pub bytes_send: u64,
}

/// Counters by interface name.
pub type NetworkIo = BTreeMap<String, NicCounters>;

/// Reads [`NetworkIo`].
pub struct NetworkIoProbe;

impl Probe for NetworkIoProbe {
    fn name(&self) -> &'static str {
        "networkio"
    }
    fn failure(&self) -> Failure {
        Failure::Network
    }
    fn collect(&self, host: &HostRoot) -> Result<Sample, ProbeError> {
        parse(&host.read(FILE)?).map(Sample::NetworkIo)
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
