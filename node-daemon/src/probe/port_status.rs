//! Established TCP connections per local port from `/proc/net/tcp` and `/proc/net/tcp6`
//! (seed 002 §二.11 `port_status`: a SPICE client is connected to a VM's port when at least N
//! — 4 by default — connections to it are ESTABLISHED; the API applies the threshold).

use std::collections::BTreeMap;

use super::{Probe, ProbeError, Sample};
use crate::error::Failure;
use crate::host::HostRoot;

/// Local port → number of ESTABLISHED connections (ports without any are absent).
pub type Established = BTreeMap<u16, u32>;

/// Reads [`Established`].
pub struct PortStatusProbe;

impl Probe for PortStatusProbe {
    fn name(&self) -> &'static str {
        "port_status"
    }
    fn failure(&self) -> Failure {
        Failure::Network
    }
    fn collect(&self, host: &HostRoot) -> Result<Sample, ProbeError> {
        let mut counts = Established::new();
        count_established(&host.read("/proc/net/tcp")?, &mut counts);
        // tcp6 is absent when IPv6 is disabled.
        if let Ok(tcp6) = host.read("/proc/net/tcp6") {
            count_established(&tcp6, &mut counts);
        }
        Ok(Sample::PortStatus(counts))
    }
}

/// Adds the ESTABLISHED (state `01`) connections of one `/proc/net/tcp*` table by local port.
pub fn count_established(table: &str, counts: &mut Established) {
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != "01" {
            continue;
        }
        let Some(port) = f[1]
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        *counts.entry(port).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_established_connections_by_local_port() {
        let table = "  sl  local_address rem_address   st\n\
   0: 0100007F:170D 00000000:0000 0A 0\n\
   1: 0100007F:170D 0100007F:D8A4 01 0\n\
   2: 0100007F:D8A4 0100007F:170D 01 0\n\
   3: 0100007F:170D 0100007F:D8A6 01 0\n";
        let mut counts = Established::new();
        count_established(table, &mut counts);
        assert_eq!(counts.get(&5901), Some(&2));
        assert_eq!(counts.get(&55460), Some(&1));
        assert_eq!(counts.len(), 2);
    }
}
