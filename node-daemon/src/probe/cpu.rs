//! CPU logical core count and time counters from `/proc/stat` (seed 002 §二.1 `cpu`).
//! Utilization is the busy share of the time between two readings (see [`utilization`]).
//! The same file's `btime` gives the host's boot time, and so its uptime.

use opsplane_resources::node_report;
use serde_json::Value;

use super::{Probe, ProbeError, Reading, parse_u64, round1, with_utc};
use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

const FILE: &str = "/proc/stat";

/// Cumulative CPU time of all cores, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Online logical cores (`cpuN` lines).
    pub numbers: u32,
    /// Ticks not idle and not waiting for IO.
    pub busy: u64,
    /// All ticks (guest time is already part of user time and is not added again).
    pub total: u64,
    /// When the host booted (Unix seconds, `btime`), if the file says.
    pub boot_time: Option<i64>,
}

/// Reads [`CpuTimes`].
pub struct CpuProbe;

impl Probe for CpuProbe {
    type Reading = CpuTimes;
    fn failure(&self) -> Failure {
        Failure::Cpu
    }
    fn collect(&self, host: &HostRoot) -> Result<CpuTimes, ProbeError> {
        parse(&host.read(FILE)?)
    }
}

impl CpuTimes {
    /// The §四.1 report's `cpu`: core count and the cycle's utilization (0 before it is known).
    pub fn report(&self, snapshot: &Snapshot) -> node_report::Cpu {
        node_report::Cpu {
            numbers: self.numbers,
            utilization: round1(snapshot.cpu_utilization.unwrap_or_default()),
        }
    }

    /// Seconds since boot at the cycle's `utc` (the §四.1 report's `uptime`).
    pub fn uptime(&self, snapshot: &Snapshot) -> Option<u64> {
        self.boot_time
            .and_then(|boot| u64::try_from(snapshot.utc.checked_sub(boot)?).ok())
    }
}

impl Reading for CpuTimes {
    fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
        with_utc(self.report(snapshot), snapshot.utc)
    }
    fn write_metrics(&self, snapshot: &Snapshot, out: &mut Exposition<'_>) {
        out.gauge(
            "opsplane_node_cpu_logical_cores",
            "Online logical CPU cores",
            [(vec![], f64::from(self.numbers))],
        );
        if let Some(boot) = self.boot_time {
            out.gauge(
                "opsplane_node_boot_time_seconds",
                "When the host booted (Unix time, /proc/stat btime)",
                [(vec![], boot as f64)],
            );
        }
        if let Some(u) = snapshot.cpu_utilization {
            out.gauge(
                "opsplane_node_cpu_utilization_ratio",
                "Busy share of all CPUs over the last sampling interval (0-1)",
                [(vec![], u / 100.0)],
            );
        }
    }
}

/// Parses `/proc/stat`.
pub fn parse(text: &str) -> Result<CpuTimes, ProbeError> {
    let mut times = None;
    let mut numbers = 0;
    let mut boot_time = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("cpu") => {
                let values = fields
                    .take(8)
                    .map(|f| parse_u64(FILE, f))
                    .collect::<Result<Vec<_>, _>>()?;
                if values.len() < 4 {
                    return Err(ProbeError::format(FILE, "cpu line has fewer than 4 fields"));
                }
                let total = values.iter().fold(0u64, |sum, v| sum.saturating_add(*v));
                // idle + iowait
                let idle = values[3].saturating_add(values.get(4).copied().unwrap_or(0));
                times = Some((total.saturating_sub(idle), total));
            }
            Some(name) if name.len() > 3 && name.starts_with("cpu") => numbers += 1,
            Some("btime") => {
                let value = fields.next().unwrap_or_default();
                boot_time = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| ProbeError::format(FILE, format!("btime {value:?}")))?,
                );
            }
            _ => {}
        }
    }
    let (busy, total) = times.ok_or_else(|| ProbeError::format(FILE, "no cpu line"))?;
    if numbers == 0 {
        return Err(ProbeError::format(FILE, "no cpuN lines"));
    }
    Ok(CpuTimes {
        numbers,
        busy,
        total,
        boot_time,
    })
}

/// Busy percentage between two readings; since boot when there is no usable previous one.
pub fn utilization(previous: Option<&CpuTimes>, current: &CpuTimes) -> f64 {
    let (busy, total) = match previous {
        Some(p) if current.total > p.total && current.busy >= p.busy => {
            (current.busy - p.busy, current.total - p.total)
        }
        _ => (current.busy, current.total),
    };
    if total == 0 {
        0.0
    } else {
        (busy as f64 / total as f64 * 100.0).clamp(0.0, 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 50 0 50 350 50 0 0 0 0 0\nintr 1\nbtime 1700000000\n";

    #[test]
    fn counts_logical_cores_and_splits_busy_from_idle_and_iowait() {
        let t = parse(STAT).unwrap();
        assert_eq!(t.numbers, 2);
        assert_eq!(t.total, 1000);
        assert_eq!(t.busy, 200);
        assert_eq!(t.boot_time, Some(1_700_000_000));
    }

    #[test]
    fn boot_time_is_optional_but_must_be_a_number() {
        let t = parse("cpu  1 0 1 7\ncpu0 1 0 1 7\n").unwrap();
        assert_eq!(t.boot_time, None);
        assert!(parse("cpu  1 0 1 7\ncpu0 1 0 1 7\nbtime soon\n").is_err());
    }

    /// The real /proc/stat of this machine has a boot time before now.
    #[test]
    fn the_real_proc_stat_has_a_boot_time() {
        let t = parse(&std::fs::read_to_string("/proc/stat").unwrap()).unwrap();
        let boot = t.boot_time.expect("btime");
        let now = jiff::Timestamp::now().as_second();
        assert!(boot > 0 && boot <= now, "{boot} vs {now}");
    }

    #[test]
    fn utilization_is_the_busy_share_of_the_delta() {
        let a = CpuTimes {
            numbers: 2,
            busy: 200,
            total: 1000,
            boot_time: None,
        };
        let b = CpuTimes {
            numbers: 2,
            busy: 275,
            total: 1100,
            boot_time: None,
        };
        assert_eq!(utilization(Some(&a), &b), 75.0);
        assert_eq!(utilization(None, &a), 20.0);
        // counters that went backwards (CPU hot-unplug) fall back to since-boot
        assert_eq!(utilization(Some(&b), &a), 20.0);
    }

    #[test]
    fn rejects_a_stat_file_without_cpu_lines() {
        assert!(parse("intr 1\n").is_err());
        assert!(parse("cpu  a b c d\ncpu0 1 1 1 1\n").is_err());
    }
}
