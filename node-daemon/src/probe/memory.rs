//! Memory total and available from `/proc/meminfo` (seed 002 §二.3 `memory`).

use opsplane_resources::node_report;
use serde_json::Value;

use super::{Probe, ProbeError, Reading, parse_u64, round1, with_utc};
use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

const FILE: &str = "/proc/meminfo";

/// Memory capacity in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable` (kernels before 3.14: `MemFree + Buffers + Cached`).
    pub available: u64,
}

impl MemInfo {
    /// Used share in percent, unrounded.
    pub fn utilization(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.total.saturating_sub(self.available) as f64 / self.total as f64 * 100.0
        }
    }

    /// Used share in percent with one decimal, as the seed shows it.
    pub fn utilization_rounded(&self) -> f64 {
        round1(self.utilization())
    }

    /// The §四.1 report's `memory`.
    pub fn report(&self) -> node_report::Memory {
        node_report::Memory {
            available: self.available,
            total: self.total,
            utilization: self.utilization_rounded(),
        }
    }
}

impl Reading for MemInfo {
    fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
        with_utc(self.report(), snapshot.utc)
    }
    fn write_metrics(&self, _snapshot: &Snapshot, out: &mut Exposition<'_>) {
        out.gauge(
            "opsplane_node_memory_total_bytes",
            "Memory size",
            [(vec![], self.total as f64)],
        );
        out.gauge(
            "opsplane_node_memory_available_bytes",
            "Memory available for new work (MemAvailable)",
            [(vec![], self.available as f64)],
        );
        out.gauge(
            "opsplane_node_memory_utilization_ratio",
            "Used share of memory (0-1)",
            [(vec![], self.utilization() / 100.0)],
        );
    }
}

/// Reads [`MemInfo`].
pub struct MemoryProbe;

impl Probe for MemoryProbe {
    type Reading = MemInfo;
    fn failure(&self) -> Failure {
        Failure::Memory
    }
    fn collect(&self, host: &HostRoot) -> Result<MemInfo, ProbeError> {
        parse(&host.read(FILE)?)
    }
}

/// Parses `/proc/meminfo` (values in kB).
pub fn parse(text: &str) -> Result<MemInfo, ProbeError> {
    let field = |name: &str| -> Result<Option<u64>, ProbeError> {
        for line in text.lines() {
            if let Some((key, rest)) = line.split_once(':')
                && key == name
            {
                let value = rest.split_whitespace().next().unwrap_or_default();
                return parse_u64(FILE, value).map(|kb| Some(kb.saturating_mul(1024)));
            }
        }
        Ok(None)
    };
    let total = field("MemTotal")?.ok_or_else(|| ProbeError::format(FILE, "no MemTotal"))?;
    let available = match field("MemAvailable")? {
        Some(a) => a,
        None => {
            let free = field("MemFree")?.unwrap_or(0);
            free.saturating_add(field("Buffers")?.unwrap_or(0))
                .saturating_add(field("Cached")?.unwrap_or(0))
        }
    };
    Ok(MemInfo { total, available })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_total_and_available_in_bytes() {
        let m =
            parse("MemTotal:       1000 kB\nMemFree: 100 kB\nMemAvailable:    250 kB\n").unwrap();
        assert_eq!(m.total, 1_024_000);
        assert_eq!(m.available, 256_000);
        assert_eq!(m.utilization_rounded(), 75.0);
    }

    #[test]
    fn old_kernels_without_memavailable_use_free_buffers_cached() {
        let m = parse("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 5 kB\n").unwrap();
        assert_eq!(m.available, 20 * 1024);
    }

    #[test]
    fn meminfo_without_total_is_an_error() {
        assert!(parse("MemFree: 1 kB\n").is_err());
        assert!(parse("MemTotal: x kB\n").is_err());
    }
}
