//! Hardware virtualization support and host name (seed 002 §二.2 `cpuvt`): the `vmx` (Intel
//! VT-x) or `svm` (AMD-V) flag in `/proc/cpuinfo`.

use serde::Serialize;

use super::{Probe, ProbeError, Sample};
use crate::error::Failure;
use crate::host::HostRoot;

/// Virtualization support as the seed reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuVt {
    /// The CPU advertises VT-x or AMD-V.
    pub cpuvt: bool,
    /// The host's name (`/proc/sys/kernel/hostname`, else `/etc/hostname`).
    pub hostname: String,
}

/// Reads [`CpuVt`].
pub struct CpuVtProbe;

impl Probe for CpuVtProbe {
    fn name(&self) -> &'static str {
        "cpuvt"
    }
    fn failure(&self) -> Failure {
        Failure::Cpu
    }
    fn collect(&self, host: &HostRoot) -> Result<Sample, ProbeError> {
        let cpuinfo = host.read("/proc/cpuinfo")?;
        Ok(Sample::CpuVt(CpuVt {
            cpuvt: has_vt_flag(&cpuinfo),
            hostname: hostname(host),
        }))
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
    fn vmx_or_svm_flag_means_virtualization_support() {
        assert!(has_vt_flag("flags\t\t: fpu vme vmx sse\n"));
        assert!(has_vt_flag("flags\t\t: fpu svm\n"));
        assert!(!has_vt_flag("flags\t\t: fpu vme sse hypervisor\n"));
        assert!(!has_vt_flag("model name\t: vmx\n"));
    }
}
