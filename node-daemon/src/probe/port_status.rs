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
//!
//! The kernel still walks its whole connection hash table for each query (about 1 ms per
//! address family on a host with 256 Ki buckets), so answers are shared for [`FRESH`]:
//! [`Recent`] remembers each asked port's count with its time and asks the kernel only about
//! ports it has no answer for that recent; concurrent requests wait for one query instead of
//! walking the table side by side. A client polling many VMs' ports, one request each or all
//! at once, costs at most one walk per second for the same ports — the freshness the sampled
//! answers had at the default 1 s sampling interval.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::ProbeError;
use crate::host::HostRoot;
pub use crate::sock_diag::Established;

/// How long a port's count answers again without asking the kernel.
pub const FRESH: Duration = Duration::from_secs(1);

/// Counts of recently asked ports (see the module docs).
#[derive(Debug, Default)]
pub struct Recent {
    /// Port → (when counted, ESTABLISHED connections).
    counts: Mutex<HashMap<u16, (Instant, u32)>>,
}

impl Recent {
    /// The counts of `ports` when every one was counted less than [`FRESH`] before `now`.
    pub fn cached(&self, ports: &[u16], now: Instant) -> Option<Established> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Established::new();
        for port in ports {
            let (at, n) = counts.get(port)?;
            if now.saturating_duration_since(*at) >= FRESH {
                return None;
            }
            if *n > 0 {
                out.insert(*port, *n);
            }
        }
        Some(out)
    }

    /// ESTABLISHED connections of `ports` at `now`, by port (ports without any are absent):
    /// from counts made less than [`FRESH`] ago, the kernel (or the proc files) asked about
    /// the other ports only.
    pub fn established(
        &self,
        host: &HostRoot,
        ports: &[u16],
        now: Instant,
    ) -> Result<Established, ProbeError> {
        // Held across the query on purpose: a concurrent request for the same ports waits for
        // this answer instead of walking the kernel's table again.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.retain(|_, (at, _)| now.saturating_duration_since(*at) < FRESH);
        let mut missing: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| !counts.contains_key(p))
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            let found = established(host, &missing)?;
            for port in missing {
                let n = found.get(&port).copied().unwrap_or(0);
                counts.insert(port, (now, n));
            }
        }
        Ok(ports
            .iter()
            .filter_map(|p| counts.get(p).filter(|(_, n)| *n > 0).map(|(_, n)| (*p, *n)))
            .collect())
    }
}

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

    /// A host whose connection table is scripted and whose queries are recorded.
    #[derive(Debug, Default)]
    struct Scripted {
        table: Mutex<Established>,
        asked: Mutex<Vec<Vec<u16>>>,
    }

    impl crate::host::HostCalls for Scripted {
        fn fs_usage(&self, _: &std::path::Path) -> std::io::Result<crate::host::FsUsage> {
            Err(std::io::ErrorKind::Unsupported.into())
        }
        fn ipv4_addresses(
            &self,
        ) -> std::io::Result<std::collections::BTreeMap<String, crate::host::Ipv4Assignment>>
        {
            Err(std::io::ErrorKind::Unsupported.into())
        }
        fn established_tcp(&self, ports: &[u16]) -> std::io::Result<Established> {
            self.asked.lock().unwrap().push(ports.to_vec());
            let table = self.table.lock().unwrap();
            Ok(table
                .iter()
                .filter(|(p, _)| ports.contains(p))
                .map(|(p, n)| (*p, *n))
                .collect())
        }
    }

    #[test]
    fn recent_counts_answer_for_a_second_and_only_unknown_ports_are_asked() {
        let calls = std::sync::Arc::new(Scripted::default());
        *calls.table.lock().unwrap() = Established::from([(5900, 4), (5901, 1)]);
        let host = HostRoot::with_calls("/nonexistent", calls.clone());
        let recent = Recent::default();
        let t0 = Instant::now();
        let ask = |ports: &[u16], at: Duration| recent.established(&host, ports, t0 + at).unwrap();

        assert_eq!(
            ask(&[5900, 5901, 5902], Duration::ZERO),
            Established::from([(5900, 4), (5901, 1)])
        );
        // the table changes; within FRESH the counts stand, and only the new port is asked
        *calls.table.lock().unwrap() = Established::from([(5900, 1), (5901, 4), (5903, 7)]);
        assert_eq!(
            ask(&[5901, 5903, 5901], Duration::from_millis(900)),
            Established::from([(5901, 1), (5903, 7)])
        );
        assert_eq!(ask(&[5902], Duration::from_millis(999)), Established::new());
        assert_eq!(
            recent.cached(&[5901, 5903], t0 + Duration::from_millis(999)),
            Some(Established::from([(5901, 1), (5903, 7)]))
        );
        assert_eq!(recent.cached(&[5901, 5904], t0), None, "5904 never counted");
        assert_eq!(recent.cached(&[5901], t0 + FRESH), None, "5901 too old");
        // a second after they were counted, ports are asked again
        assert_eq!(
            ask(&[5900, 5901, 5903], FRESH),
            Established::from([(5900, 1), (5901, 4), (5903, 7)])
        );
        assert_eq!(
            *calls.asked.lock().unwrap(),
            vec![vec![5900, 5901, 5902], vec![5903], vec![5900, 5901]]
        );
    }

    #[test]
    fn a_failed_query_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::with_calls(dir.path(), std::sync::Arc::new(NoSockDiag));
        let recent = Recent::default();
        let now = Instant::now();
        assert!(recent.established(&host, &[5901], now).is_err());
        std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
        std::fs::write(dir.path().join("proc/net/tcp"), TABLE).unwrap();
        assert_eq!(
            recent.established(&host, &[5901], now).unwrap(),
            Established::from([(5901, 2)])
        );
    }

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

    #[test]
    fn a_host_without_sock_diag_is_read_from_its_proc_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
        std::fs::write(dir.path().join("proc/net/tcp"), TABLE).unwrap();
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
