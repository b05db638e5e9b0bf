//! Established TCP connections per local port (seed 002 §二.11 `port_status`: a SPICE client
//! is connected to a VM's port when at least N — 4 by default — connections to it are
//! ESTABLISHED; the API applies the threshold).
//!
//! Unlike the other probes this one is a query, not part of the sampling cycle: its input is
//! the request's port list, and it is answered when asked, from the kernel's
//! socket-diagnostics netlink interface ([`crate::sock_diag`]) filtered by state and local
//! port in the kernel. Reading and parsing `/proc/net/tcp` + `tcp6` every cycle was the most
//! expensive part of the cycle and grows with every connection of the host; the files are
//! still read when netlink is not available (a fixture host, a kernel without `inet_diag`).

use std::sync::atomic::{AtomicBool, Ordering};

use super::ProbeError;
use crate::host::HostRoot;
pub use crate::sock_diag::Established;

/// ESTABLISHED connections whose local port is one of `ports`, by port; ports without any
/// are absent.
pub fn established(host: &HostRoot, ports: &[u16]) -> Result<Established, ProbeError> {
    match host.established_tcp(ports) {
        Ok(counts) => return Ok(counts),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(e) => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "sock_diag netlink query failed; port_status reads /proc/net/tcp instead");
            }
        }
    }
    let mut counts = Established::new();
    count_established(&host.read("/proc/net/tcp")?, ports, &mut counts);
    // tcp6 is absent when IPv6 is disabled.
    if let Ok(tcp6) = host.read("/proc/net/tcp6") {
        count_established(&tcp6, ports, &mut counts);
    }
    Ok(counts)
}

/// Adds the ESTABLISHED (state `01`) connections of one `/proc/net/tcp*` table whose local
/// port is one of `ports`.
pub fn count_established(table: &str, ports: &[u16], counts: &mut Established) {
    for line in table.lines().skip(1) {
        let mut f = line.split_ascii_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some("01")) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some(port) = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if ports.contains(&port) {
            *counts.entry(port).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st\n\
   0: 0100007F:170D 00000000:0000 0A 0\n\
   1: 0100007F:170D 0100007F:D8A4 01 0\n\
   2: 0100007F:D8A4 0100007F:170D 01 0\n\
   3: 0100007F:170D 0100007F:D8A6 01 0\n\
   4: 0100007F:170E 0100007F:D8A8 06 0\n";

    #[test]
    fn counts_only_established_connections_of_the_asked_local_ports() {
        let mut counts = Established::new();
        count_established(TABLE, &[5901, 55460, 5902], &mut counts);
        assert_eq!(counts, Established::from([(5901, 2), (55460, 1)]));
        let mut counts = Established::new();
        count_established(TABLE, &[5901], &mut counts);
        assert_eq!(counts, Established::from([(5901, 2)]));
    }

    #[test]
    fn a_host_without_sock_diag_is_read_from_its_proc_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
        std::fs::write(dir.path().join("proc/net/tcp"), TABLE).unwrap();
        #[derive(Debug)]
        struct NoSockDiag;
        impl crate::host::HostCalls for NoSockDiag {
            fn fs_usage(&self, _: &std::path::Path) -> std::io::Result<crate::host::FsUsage> {
                Err(std::io::ErrorKind::Unsupported.into())
            }
            fn ipv4_addresses(
                &self,
            ) -> std::io::Result<std::collections::BTreeMap<String, crate::host::Ipv4Assignment>>
            {
                Err(std::io::ErrorKind::Unsupported.into())
            }
        }
        let host = HostRoot::with_calls(dir.path(), std::sync::Arc::new(NoSockDiag));
        assert_eq!(
            established(&host, &[5901]).unwrap(),
            Established::from([(5901, 2)])
        );
        let empty = tempfile::tempdir().unwrap();
        let host = HostRoot::with_calls(empty.path(), std::sync::Arc::new(NoSockDiag));
        assert!(established(&host, &[5901]).is_err());
    }
}
