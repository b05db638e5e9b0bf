//! Host probes (seed 002 §二.1-11): one file per probe, one small trait, and [`registry`]
//! listing them all — node_exporter's collector pattern. Adding a probe is adding one file,
//! one [`Sample`] variant and one line in [`registry`]. `port_status` is the exception: it
//! depends on the request's ports, so it is a query answered on demand
//! ([`port_status::established`]), not a probe of the cycle.
//!
//! Probes only read; they return raw readings (cumulative counters included). Rates and
//! utilizations need two readings and are derived by the sampler (`crate::sampler`).

pub mod cpu;
pub mod cpuvt;
pub mod disk;
pub mod diskio;
pub mod hardware;
pub mod memory;
pub mod network;
pub mod networkio;
pub mod port_status;
pub mod service;
pub mod vm;

use std::sync::Arc;
use std::time::Duration;

use crate::error::Failure;
use crate::host::HostRoot;

/// Why a probe could not read the host.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A host file or system call failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A host file did not have the expected format.
    #[error("{file}: {problem}")]
    Format {
        /// The host file, e.g. `/proc/stat`.
        file: &'static str,
        /// What was wrong with it.
        problem: String,
    },
    /// A configured command failed.
    #[error("{0}")]
    Command(String),
}

impl ProbeError {
    /// A format error of `file`.
    pub fn format(file: &'static str, problem: impl Into<String>) -> Self {
        Self::Format {
            file,
            problem: problem.into(),
        }
    }
}

/// One probe's reading of the host.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// [`cpu::CpuTimes`].
    Cpu(cpu::CpuTimes),
    /// [`cpuvt::CpuVt`].
    CpuVt(cpuvt::CpuVt),
    /// [`memory::MemInfo`].
    Memory(memory::MemInfo),
    /// [`disk::Disks`].
    Disk(disk::Disks),
    /// [`diskio::DiskIo`].
    DiskIo(diskio::DiskIo),
    /// [`network::Nics`].
    Network(network::Nics),
    /// [`networkio::NetworkIo`].
    NetworkIo(networkio::NetworkIo),
    /// [`vm::VmCount`].
    Vm(vm::VmCount),
    /// [`hardware::Hardware`].
    Hardware(hardware::Hardware),
    /// [`service::Services`].
    Service(service::Services),
}

/// A host probe.
pub trait Probe: Send + Sync {
    /// The probe's name: its seed endpoint and its `probe` metric label.
    fn name(&self) -> &'static str;
    /// The seed return-code family reported when this probe fails.
    fn failure(&self) -> Failure;
    /// Reads the host once.
    fn collect(&self, host: &HostRoot) -> Result<Sample, ProbeError>;
    /// How often the host must be read: `None` every cycle (the default); `Some(period)` at
    /// most once per `period`, the sampler reusing the last reading (or failure) in between —
    /// for data that rarely changes or costs a process to read.
    fn refresh(&self) -> Option<Duration> {
        None
    }
}

/// How often the hardware inventory (and the OS variant) is read again.
pub const HARDWARE_REFRESH: Duration = Duration::from_secs(60);

/// Settings some probes need; everything else they read from the host.
#[derive(Debug, Clone, Default)]
pub struct ProbeSettings {
    /// Services whose state `service` reports.
    pub services: Vec<String>,
    /// Command (program + leading arguments) used as `systemctl`.
    pub systemctl: Vec<String>,
    /// How often `systemctl` is run for the service states (zero: every cycle).
    pub service_interval: Duration,
    /// When set, exactly these interfaces are the "physical" NICs of `network`.
    pub nics: Option<Vec<String>>,
}

/// Every probe, in one place.
pub fn registry(settings: &ProbeSettings) -> Vec<Arc<dyn Probe>> {
    vec![
        Arc::new(cpu::CpuProbe),
        Arc::new(cpuvt::CpuVtProbe::default()),
        Arc::new(memory::MemoryProbe),
        Arc::new(disk::DiskProbe::default()),
        Arc::new(diskio::DiskIoProbe),
        Arc::new(network::NetworkProbe::new(settings.nics.clone())),
        Arc::new(networkio::NetworkIoProbe),
        Arc::new(vm::VmProbe::default()),
        Arc::new(hardware::HardwareProbe),
        Arc::new(service::ServiceProbe {
            services: settings.services.clone(),
            systemctl: settings.systemctl.clone(),
            every: settings.service_interval,
        }),
    ]
}

/// Rounds a percentage to one decimal, as the seed's examples show (`8.1`).
pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// The first `N` whitespace-separated fields of a line, without allocating (these parsers run
/// every cycle over every line of their file); `None` when the line has fewer.
pub(crate) fn first_fields<const N: usize>(line: &str) -> Option<[&str; N]> {
    let mut out = [""; N];
    let mut fields = line.split_ascii_whitespace();
    for slot in &mut out {
        *slot = fields.next()?;
    }
    Some(out)
}

/// Parses a whitespace-separated unsigned field, naming the file on error.
pub(crate) fn parse_u64(file: &'static str, field: &str) -> Result<u64, ProbeError> {
    field
        .parse()
        .map_err(|_| ProbeError::format(file, format!("{field:?} is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fields_takes_exactly_n_fields_or_none() {
        assert_eq!(first_fields::<2>("  a \t b c"), Some(["a", "b"]));
        assert_eq!(first_fields::<3>("a b c"), Some(["a", "b", "c"]));
        assert_eq!(first_fields::<3>("a b"), None);
        assert_eq!(first_fields::<1>(""), None);
    }
}
