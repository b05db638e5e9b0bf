//! Hardware virtualization support and host name (seed 002 §二.2 `cpuvt`): the `vmx` (Intel
//! VT-x) or `svm` (AMD-V) flag in `/proc/cpuinfo`.
//!
//! The flag cannot change while the host runs, and producing `/proc/cpuinfo` is costly (the
//! kernel asks every CPU for its current frequency), so it is read once, on the first cycle
//! that can read it; the host name (it can change) is read every cycle.

use std::sync::OnceLock;

use serde::Serialize;

use serde_json::Value;

use super::{Probe, ProbeError, Reading};
use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

/// Virtualization support as the seed reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuVt {
    /// The CPU advertises VT-x or AMD-V.
    pub cpuvt: bool,
    /// The host's name (`/proc/sys/kernel/hostname`, else `/etc/hostname`).
    pub hostname: String,
}

/// Reads [`CpuVt`].
#[derive(Debug, Default)]
pub struct CpuVtProbe {
    vt: OnceLock<bool>,
}

impl Probe for CpuVtProbe {
    type Reading = CpuVt;
    fn failure(&self) -> Failure {
        Failure::Cpu
    }
    fn collect(&self, host: &HostRoot) -> Result<CpuVt, ProbeError> {
        let cpuvt = match self.vt.get() {
            Some(vt) => *vt,
            // Only a successful read is remembered; a failure is this cycle's failure.
            None => {
                let vt = has_vt_flag(&host.read("/proc/cpuinfo")?);
                *self.vt.get_or_init(|| vt)
            }
        };
        Ok(CpuVt {
            cpuvt,
            hostname: hostname(host),
        })
    }
}

impl Reading for CpuVt {
    /// The seed's `cpuvt` answer carries no `utc`.
    fn seed_data(&self, _snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
    fn write_metrics(&self, _snapshot: &Snapshot, out: &mut Exposition<'_>) {
        out.gauge(
            "opsplane_node_cpu_virtualization_supported",
            "1 when the CPU has VT-x or AMD-V",
            [(vec![], f64::from(u8::from(self.cpuvt)))],
        );
    }
}

/// Whether any `flags` line of `/proc/cpuinfo` lists `vmx` or `svm`.
pub fn has_vt_flag(cpuinfo: &str) -> bool {
    cpuinfo.lines().any(|line| {
        line.split_once(':').is_some_and(|(key, value)| {
            key.trim() == "flags" && value.split_whitespace().any(|f| f == "vmx" || f == "svm")
        })
    })
}

/// The host name, empty when neither source is readable.
pub fn hostname(host: &HostRoot) -> String {
    host.read_attr("/proc/sys/kernel/hostname")
        .filter(|h| !h.is_empty())
        .or_else(|| host.read_attr("/etc/hostname"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_read_once_and_the_hostname_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        let probe = CpuVtProbe::default();
        assert!(probe.collect(&host).is_err(), "no cpuinfo yet");
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(dir.path().join("proc/cpuinfo"), "flags\t: fpu vmx\n").unwrap();
        std::fs::write(dir.path().join("proc/sys/kernel/hostname"), "a\n").unwrap();
        let read = |probe: &CpuVtProbe| probe.collect(&host).unwrap();
        assert_eq!(
            read(&probe),
            CpuVt {
                cpuvt: true,
                hostname: "a".into()
            }
        );
        std::fs::write(dir.path().join("proc/cpuinfo"), "flags\t: fpu\n").unwrap();
        std::fs::write(dir.path().join("proc/sys/kernel/hostname"), "b\n").unwrap();
        assert_eq!(
            read(&probe),
            CpuVt {
                cpuvt: true,
                hostname: "b".into()
            }
        );
        // a new probe (a restarted daemon) reads the flag again
        assert!(!read(&CpuVtProbe::default()).cpuvt);
    }

    #[test]
    fn vmx_or_svm_flag_means_virtualization_support() {
        assert!(has_vt_flag("flags\t\t: fpu vme vmx sse\n"));
        assert!(has_vt_flag("flags\t\t: fpu svm\n"));
        assert!(!has_vt_flag("flags\t\t: fpu vme sse hypervisor\n"));
        assert!(!has_vt_flag("model name\t: vmx\n"));
    }
}
