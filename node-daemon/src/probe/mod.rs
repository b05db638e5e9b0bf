//! Host probes (seed 002 §二.1-11): one file per probe and the `registry!` below listing them
//! all in one place — node_exporter's collector pattern. A probe reads the host
//! ([`Probe::collect`]) and its reading shows itself ([`Reading`]): the `data` of its node API
//! endpoint and its Prometheus families, like a collector's `Update`. Adding a probe is
//! adding one file and one line in the registry (see the node-daemon README).
//! `port_status` is the exception: it depends on the request's ports, so it is a query
//! answered on demand ([`port_status::established`]), not a probe of the cycle.
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

use serde::Serialize;
use serde_json::Value;

use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

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

/// What a probe's reading shows, each reading type for itself.
pub trait Reading {
    /// `data` of the probe's seed 002 §二 endpoint for the cycle of `snapshot` (its `utc`,
    /// what the sampler derived).
    fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error>;
    /// The reading's host metric families in `/metrics`.
    fn write_metrics(&self, snapshot: &Snapshot, out: &mut Exposition<'_>);
}

/// A reading type of the registry: which probe makes it and how it sits in a [`Sample`].
/// Implemented by the `registry!` only, so a type belongs to exactly one probe.
pub trait Keyed: Reading + Sized {
    /// The probe that makes it.
    const ID: ProbeId;
    /// Wraps the reading.
    fn into_sample(self) -> Sample;
    /// The reading inside `sample`, when `sample` is one of this type.
    fn from_sample(sample: &Sample) -> Option<&Self>;
}

/// A host probe.
pub trait Probe: Send + Sync {
    /// What one reading is; it names the probe ([`Keyed::ID`]).
    type Reading: Keyed;
    /// The seed return-code family reported when this probe fails.
    fn failure(&self) -> Failure;
    /// Reads the host once.
    fn collect(&self, host: &HostRoot) -> Result<Self::Reading, ProbeError>;
    /// How often the host must be read: `None` every cycle (the default); `Some(period)` at
    /// most once per `period`, the sampler reusing the last reading (or failure) in between —
    /// for data that rarely changes or costs a process to read.
    fn refresh(&self) -> Option<Duration> {
        None
    }
}

/// Any probe, as the sampler runs it: its reading wrapped in a [`Sample`].
pub trait DynProbe: Send + Sync {
    /// Which probe.
    fn id(&self) -> ProbeId;
    /// See [`Probe::failure`].
    fn failure(&self) -> Failure;
    /// See [`Probe::collect`].
    fn collect(&self, host: &HostRoot) -> Result<Sample, ProbeError>;
    /// See [`Probe::refresh`].
    fn refresh(&self) -> Option<Duration>;
}

impl<P: Probe> DynProbe for P {
    fn id(&self) -> ProbeId {
        <P::Reading as Keyed>::ID
    }
    fn failure(&self) -> Failure {
        Probe::failure(self)
    }
    fn collect(&self, host: &HostRoot) -> Result<Sample, ProbeError> {
        Probe::collect(self, host).map(Keyed::into_sample)
    }
    fn refresh(&self) -> Option<Duration> {
        Probe::refresh(self)
    }
}

/// A name that is no probe's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no probe is called {0:?}")]
pub struct UnknownProbe(pub String);

/// Generates, from one line per probe, the [`ProbeId`] enum, the [`Sample`] enum, the
/// [`Keyed`] impls tying each reading type to its probe, and [`registry`].
macro_rules! registry {
    (
        $(#[$registry_doc:meta])*
        fn registry($settings:ident) {
            $( $(#[$doc:meta])* $id:ident($name:literal): $reading:ty = $probe:expr, )*
        }
    ) => {
        /// Which probe: the key of a snapshot's readings, its seed endpoint name and its
        /// `probe` metric label. In registry (seed) order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum ProbeId {
            $( $(#[$doc])* $id, )*
        }

        impl ProbeId {
            /// Every probe, in registry order.
            pub const ALL: &'static [ProbeId] = &[$(ProbeId::$id),*];

            /// The probe's seed endpoint name, e.g. `networkio`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( ProbeId::$id => $name, )*
                }
            }
        }

        impl std::str::FromStr for ProbeId {
            type Err = UnknownProbe;
            fn from_str(name: &str) -> Result<Self, UnknownProbe> {
                match name {
                    $( $name => Ok(ProbeId::$id), )*
                    other => Err(UnknownProbe(other.to_owned())),
                }
            }
        }

        impl std::fmt::Display for ProbeId {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        /// One probe's reading of the host.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Sample {
            $( $(#[$doc])* $id($reading), )*
        }

        impl Sample {
            /// The probe that made it.
            pub fn id(&self) -> ProbeId {
                match self {
                    $( Sample::$id(_) => ProbeId::$id, )*
                }
            }

            /// See [`Reading::seed_data`].
            pub fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
                match self {
                    $( Sample::$id(reading) => reading.seed_data(snapshot), )*
                }
            }

            /// See [`Reading::write_metrics`].
            pub fn write_metrics(&self, snapshot: &Snapshot, out: &mut Exposition<'_>) {
                match self {
                    $( Sample::$id(reading) => reading.write_metrics(snapshot, out), )*
                }
            }
        }

        $(
            impl Keyed for $reading {
                const ID: ProbeId = ProbeId::$id;
                fn into_sample(self) -> Sample {
                    Sample::$id(self)
                }
                fn from_sample(sample: &Sample) -> Option<&Self> {
                    match sample {
                        Sample::$id(reading) => Some(reading),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )*

        $(#[$registry_doc])*
        pub fn registry($settings: &ProbeSettings) -> Vec<Arc<dyn DynProbe>> {
            /// The probe, checked to make the reading type its line names.
            fn of<R: Keyed, P: Probe<Reading = R> + 'static>(probe: P) -> Arc<dyn DynProbe> {
                Arc::new(probe)
            }
            vec![ $( of::<$reading, _>($probe), )* ]
        }
    };
}

registry! {
    /// Every probe of the sampling cycle, in one place: its id, endpoint name, reading type
    /// and how it is built from the settings. Adding a probe is adding its file and a line here.
    fn registry(settings) {
        /// §二.1, [`cpu::CpuTimes`].
        Cpu("cpu"): cpu::CpuTimes = cpu::CpuProbe,
        /// §二.2, [`cpuvt::CpuVt`].
        CpuVt("cpuvt"): cpuvt::CpuVt = cpuvt::CpuVtProbe::default(),
        /// §二.3, [`memory::MemInfo`].
        Memory("memory"): memory::MemInfo = memory::MemoryProbe,
        /// §二.4, [`disk::Disks`].
        Disk("disk"): disk::Disks = disk::DiskProbe::default(),
        /// §二.5, [`diskio::DiskIo`].
        DiskIo("diskio"): diskio::DiskIo = diskio::DiskIoProbe,
        /// §二.6, [`network::Nics`].
        Network("network"): network::Nics = network::NetworkProbe::new(settings.nics.clone()),
        /// §二.7, [`networkio::NetworkIo`].
        NetworkIo("networkio"): networkio::NetworkIo = networkio::NetworkIoProbe,
        /// §二.8, [`vm::VmCount`].
        Vm("vm"): vm::VmCount = vm::VmProbe::default(),
        /// §二.9, [`hardware::Hardware`].
        Hardware("hardware"): hardware::Hardware = hardware::HardwareProbe,
        /// §二.10, [`service::Services`].
        Service("service"): service::Services = service::ServiceProbe::new(settings),
    }
}

/// `value` (a JSON object) with the cycle's `utc` added: most endpoints' `data`.
pub fn with_utc(value: impl Serialize, utc: i64) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(value)?;
    if let Value::Object(map) = &mut value {
        map.insert("utc".to_owned(), Value::from(utc));
    }
    Ok(value)
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
    fn the_registry_runs_every_probe_once_in_id_order_and_names_round_trip() {
        let ids: Vec<ProbeId> = registry(&ProbeSettings::default())
            .iter()
            .map(|p| p.id())
            .collect();
        assert_eq!(ids, ProbeId::ALL);
        for id in ProbeId::ALL {
            assert_eq!(id.name().parse(), Ok(*id));
            assert_eq!(id.to_string(), id.name());
        }
        assert_eq!(
            "port_status".parse::<ProbeId>(),
            Err(UnknownProbe("port_status".into())),
            "a query, not a probe of the cycle"
        );
    }

    #[test]
    fn a_reading_type_names_its_probe_and_only_its_own_sample() {
        let vm = vm::VmCount { numbers: 2 }.into_sample();
        assert_eq!(vm.id(), ProbeId::Vm);
        assert_eq!(
            vm::VmCount::from_sample(&vm),
            Some(&vm::VmCount { numbers: 2 })
        );
        assert_eq!(memory::MemInfo::from_sample(&vm), None);
        assert_eq!(<memory::MemInfo as Keyed>::ID, ProbeId::Memory);
    }

    #[test]
    fn first_fields_takes_exactly_n_fields_or_none() {
        assert_eq!(first_fields::<2>("  a \t b c"), Some(["a", "b"]));
        assert_eq!(first_fields::<3>("a b c"), Some(["a", "b", "c"]));
        assert_eq!(first_fields::<3>("a b"), None);
        assert_eq!(first_fields::<1>(""), None);
    }
}
