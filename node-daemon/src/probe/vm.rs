//! Running virtual machines (seed 002 §二.8 `vm`): QEMU/KVM processes found by scanning
//! `/proc/<pid>/cmdline`. A process counts when its program is `qemu-system-*`, `qemu-kvm` or
//! `kvm`; QEMU tools (`qemu-img`, `qemu-nbd`, the guest agent `qemu-ga`) do not.

use serde::Serialize;

use super::{Probe, ProbeError, Sample};
use crate::error::Failure;
use crate::host::HostRoot;

/// Number of running VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmCount {
    /// Running QEMU/KVM processes.
    pub numbers: u64,
}

/// Reads [`VmCount`].
pub struct VmProbe;

impl Probe for VmProbe {
    fn name(&self) -> &'static str {
        "vm"
    }
    fn failure(&self) -> Failure {
        Failure::Vms
    }
    fn collect(&self, host: &HostRoot) -> Result<Sample, ProbeError> {
        // /proc itself must be readable; a process that exits mid-scan is simply not counted.
        std::fs::read_dir(host.path("/proc"))?;
        let numbers = host
            .list("/proc")
            .iter()
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|pid| std::fs::read(host.path(format!("/proc/{pid}/cmdline"))).ok())
            .filter(|cmdline| is_vm(cmdline))
            .count() as u64;
        Ok(Sample::Vm(VmCount { numbers }))
    }
}

/// Whether a NUL-separated command line is a QEMU/KVM virtual machine.
pub fn is_vm(cmdline: &[u8]) -> bool {
    let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let base = program.rsplit(|b| *b == b'/').next().unwrap_or_default();
    base.starts_with(b"qemu-system-") || base == b"qemu-kvm" || base == b"kvm"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_system_and_qemu_kvm_are_vms_but_qemu_tools_are_not() {
        assert!(is_vm(b"/usr/bin/qemu-system-x86_64\0-name\0guest=vm1\0"));
        assert!(is_vm(b"/usr/libexec/qemu-kvm\0-name\0vm2\0"));
        assert!(!is_vm(b"/usr/bin/qemu-ga\0"));
        assert!(!is_vm(b"qemu-img\0convert\0"));
        assert!(!is_vm(b"/bin/bash\0-c\0qemu-system-x86_64\0"));
        assert!(!is_vm(b""));
    }
}
