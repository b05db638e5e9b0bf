//! Running virtual machines (seed 002 §二.8 `vm`): QEMU/KVM processes found by scanning
//! `/proc/<pid>/cmdline`. A process counts when its program is `qemu-system-*`, `qemu-kvm` or
//! `kvm`; QEMU tools (`qemu-img`, `qemu-nbd`, the guest agent `qemu-ga`) do not.
//!
//! Reading every process's command line every cycle costs three system calls and a walk of
//! the target's memory per process, so the verdict is remembered per PID: each cycle lists
//! `/proc` (which PIDs exist) and reads the command line only of a process it has not judged
//! yet, first saw less than [`YOUNG`] ago (a launcher such as libvirtd forks first and execs
//! QEMU a moment later), or judged [`RESCAN`] ago or more (an `exec` much later, or a PID
//! reused within one cycle, is seen by then).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::{Probe, ProbeError, Reading, with_utc};
use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

/// A process first seen less than this ago has its command line read every cycle.
pub const YOUNG: Duration = Duration::from_secs(10);
/// A verdict older than this is made again.
pub const RESCAN: Duration = Duration::from_secs(60);

/// Number of running VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmCount {
    /// Running QEMU/KVM processes.
    pub numbers: u64,
}

/// Reads [`VmCount`].
#[derive(Debug, Default)]
pub struct VmProbe {
    seen: Mutex<Verdicts>,
}

#[derive(Debug, Clone, Copy)]
struct Verdict {
    vm: bool,
    first_seen: Instant,
    judged: Instant,
}

#[derive(Debug, Default)]
struct Verdicts {
    /// The processes of the last cycle.
    by_pid: HashMap<u32, Verdict>,
    /// This cycle's, built while scanning (kept to reuse its allocation).
    next: HashMap<u32, Verdict>,
    /// Reused buffer for command lines.
    cmdline: Vec<u8>,
}

impl Probe for VmProbe {
    type Reading = VmCount;
    fn failure(&self) -> Failure {
        Failure::Vms
    }
    fn collect(&self, host: &HostRoot) -> Result<VmCount, ProbeError> {
        let numbers = self.count(host, Instant::now())?;
        Ok(VmCount { numbers })
    }
}

impl Reading for VmCount {
    fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
        with_utc(self, snapshot.utc)
    }
    fn write_metrics(&self, _snapshot: &Snapshot, out: &mut Exposition<'_>) {
        out.gauge(
            "opsplane_node_vms_running",
            "Running QEMU/KVM virtual machines",
            [(vec![], self.numbers as f64)],
        );
    }
}

impl VmProbe {
    /// Running VMs at `now` (tests pass their own clock).
    pub fn count(&self, host: &HostRoot, now: Instant) -> Result<u64, ProbeError> {
        let proc_dir = host.path("/proc");
        // /proc itself must be readable; a process that exits mid-scan is simply not counted.
        let entries = std::fs::read_dir(&proc_dir)?;
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let verdicts = &mut *guard;
        let mut numbers = 0;
        verdicts.next.clear();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let known = verdicts.by_pid.get(&pid).copied();
            let verdict = match known {
                Some(v)
                    if now.duration_since(v.first_seen) >= YOUNG
                        && now.duration_since(v.judged) < RESCAN =>
                {
                    Some(v)
                }
                _ => {
                    verdicts.cmdline.clear();
                    let read = std::fs::File::open(proc_dir.join(&name).join("cmdline")).and_then(
                        |mut f| std::io::Read::read_to_end(&mut f, &mut verdicts.cmdline),
                    );
                    // an error: the process exited meanwhile
                    read.ok().map(|_| Verdict {
                        vm: is_vm(&verdicts.cmdline),
                        first_seen: known.map_or(now, |v| v.first_seen),
                        judged: now,
                    })
                }
            };
            if let Some(verdict) = verdict {
                numbers += u64::from(verdict.vm);
                verdicts.next.insert(pid, verdict);
            }
        }
        std::mem::swap(&mut verdicts.by_pid, &mut verdicts.next);
        Ok(numbers)
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
    fn command_lines_are_read_again_only_while_young_or_after_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        let process = |pid: u32, cmdline: &[u8]| {
            let d = dir.path().join(format!("proc/{pid}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cmdline"), cmdline).unwrap();
        };
        process(1, b"/sbin/init\0");
        process(100, b"/usr/bin/qemu-system-x86_64\0-name\0a\0");
        process(200, b"/usr/sbin/libvirtd\0");
        std::fs::create_dir_all(dir.path().join("proc/sys")).unwrap();
        let probe = VmProbe::default();
        let t0 = Instant::now();
        assert_eq!(probe.count(&host, t0).unwrap(), 1);
        // libvirtd's child execs QEMU a moment after the fork: a young process is read again
        process(200, b"/usr/bin/qemu-system-x86_64\0-name\0b\0");
        assert_eq!(probe.count(&host, t0 + Duration::from_secs(1)).unwrap(), 2);
        // an exited VM is gone at once, a new one counts at once
        std::fs::remove_dir_all(dir.path().join("proc/100")).unwrap();
        process(300, b"qemu-kvm\0");
        assert_eq!(probe.count(&host, t0 + Duration::from_secs(2)).unwrap(), 2);
        // once old, a verdict is remembered: an exec now is not seen ...
        process(1, b"/usr/bin/qemu-system-aarch64\0");
        let later = t0 + YOUNG + Duration::from_secs(1);
        assert_eq!(probe.count(&host, later).unwrap(), 2);
        // ... until its verdict is made again (last made at t0 + 2 s, while it was young)
        let almost = t0 + Duration::from_secs(2) + RESCAN - Duration::from_millis(1);
        assert_eq!(probe.count(&host, almost).unwrap(), 2);
        assert_eq!(
            probe
                .count(&host, t0 + Duration::from_secs(2) + RESCAN)
                .unwrap(),
            3
        );
        assert!(
            VmProbe::default()
                .count(&HostRoot::new("/nonexistent"), t0)
                .is_err()
        );
    }

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
