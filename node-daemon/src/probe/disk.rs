//! Mounted block-device filesystems and their capacity (seed 002 §二.4 `disk`).
//!
//! Mounts come from `/proc/1/mounts` (the host's init mount namespace; `/proc/self/mounts`
//! when that is unreadable). Only filesystems on block devices (`/dev/...`, no loop devices)
//! count, one entry per device at its first mount point, so bind mounts of the same
//! filesystem are not reported twice. Capacity follows psutil's `disk_usage`, which the seed
//! system used: `used = total - free`, `free` = space available to unprivileged users,
//! `utilization = used / (used + free)`.
//!
//! `type` is derived from the disk under the filesystem (partitions, device-mapper and md
//! devices are followed to their first underlying disk):
//! 0 rotational disk (HDD), 1 other/unknown, 2 non-rotational SATA/SAS/SCSI disk (SSD),
//! 3 NVMe, 4 virtio (`vd*`). That walk through sysfs is remembered per device and done again
//! every [`super::HARDWARE_REFRESH`]; usage (`statvfs`) is read every cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use opsplane_resources::node_report;
use serde::Serialize;
use serde_json::Value;

use super::{Probe, ProbeError, Reading, round1, with_utc};
use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

/// A rotational disk.
pub const TYPE_HDD: u8 = 0;
/// Anything else or unknown.
pub const TYPE_OTHER: u8 = 1;
/// A non-rotational SATA/SAS/SCSI disk.
pub const TYPE_SSD: u8 = 2;
/// An NVMe namespace.
pub const TYPE_NVME: u8 = 3;
/// A virtio block device.
pub const TYPE_VIRTIO: u8 = 4;

/// One mounted filesystem, in the seed's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MountUsage {
    /// Disk type, see the module docs.
    #[serde(rename = "type")]
    pub disk_type: u8,
    /// Capacity in bytes.
    pub total: u64,
    /// Used bytes.
    pub used: u64,
    /// Bytes available to unprivileged users.
    pub free: u64,
    /// `used / (used + free)` in percent, one decimal.
    pub utilization: f64,
}

/// Mounted filesystems by mount point.
pub type Disks = BTreeMap<String, MountUsage>;

/// Reads [`Disks`].
#[derive(Debug, Default)]
pub struct DiskProbe {
    /// Disk type by device, and when that map was started.
    types: Mutex<(Option<Instant>, HashMap<String, u8>)>,
}

impl Probe for DiskProbe {
    type Reading = Disks;
    fn failure(&self) -> Failure {
        Failure::Storage
    }
    fn collect(&self, host: &HostRoot) -> Result<Disks, ProbeError> {
        let mounts = host
            .read("/proc/1/mounts")
            .or_else(|_| host.read("/proc/self/mounts"))?;
        let mut disks = Disks::new();
        let mut types = self.types.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if types
            .0
            .is_none_or(|since| now.duration_since(since) >= super::HARDWARE_REFRESH)
        {
            *types = (Some(now), HashMap::new());
        }
        for (device, mount_point) in block_mounts(&mounts) {
            let usage = match host.fs_usage(&mount_point) {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(%mount_point, error = %e, "statvfs failed; mount skipped");
                    continue;
                }
            };
            let used = usage.total.saturating_sub(usage.free);
            let denominator = used.saturating_add(usage.available);
            let utilization = if denominator == 0 {
                0.0
            } else {
                round1(used as f64 / denominator as f64 * 100.0)
            };
            disks.insert(
                mount_point,
                MountUsage {
                    disk_type: *types
                        .1
                        .entry(device)
                        .or_insert_with_key(|device| disk_type(host, device)),
                    total: usage.total,
                    used,
                    free: usage.available,
                    utilization,
                },
            );
        }
        Ok(disks)
    }
}

/// The §四.1 report's `disk`: the endpoint's filesystems without `free`.
pub fn report(disks: &Disks) -> BTreeMap<String, node_report::Filesystem> {
    disks
        .iter()
        .map(|(mount, d)| {
            (
                mount.clone(),
                node_report::Filesystem {
                    total: d.total,
                    disk_type: d.disk_type,
                    used: d.used,
                    utilization: d.utilization,
                },
            )
        })
        .collect()
}

impl Reading for Disks {
    fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
        with_utc(self, snapshot.utc)
    }
    fn write_metrics(&self, _snapshot: &Snapshot, out: &mut Exposition<'_>) {
        let label = |mount: &String, d: &MountUsage| {
            vec![
                ("mountpoint", mount.clone()),
                ("type", d.disk_type.to_string()),
            ]
        };
        out.gauge(
            "opsplane_node_filesystem_size_bytes",
            "Filesystem size",
            self.iter().map(|(m, d)| (label(m, d), d.total as f64)),
        );
        out.gauge(
            "opsplane_node_filesystem_used_bytes",
            "Filesystem bytes used",
            self.iter().map(|(m, d)| (label(m, d), d.used as f64)),
        );
        out.gauge(
            "opsplane_node_filesystem_avail_bytes",
            "Filesystem bytes available to unprivileged users",
            self.iter().map(|(m, d)| (label(m, d), d.free as f64)),
        );
    }
}

/// `(device, mount point)` of block-device filesystems, first mount point per device.
pub fn block_mounts(mounts: &str) -> Vec<(String, String)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(device), Some(mount_point), Some(fstype)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !device.starts_with("/dev/")
            || device.starts_with("/dev/loop")
            || matches!(fstype, "squashfs" | "iso9660" | "udf")
        {
            continue;
        }
        if seen.insert(device.to_owned()) {
            out.push((device.to_owned(), unescape(mount_point)));
        }
    }
    out
}

/// Undoes the octal escapes of `/proc/*/mounts` (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(code) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The seed `type` of the disk under `device` (e.g. `/dev/sda1`, `/dev/mapper/vg-root`).
pub fn disk_type(host: &HostRoot, device: &str) -> u8 {
    let Some(disk) = underlying_disk(host, device) else {
        return TYPE_OTHER;
    };
    if disk.starts_with("nvme") {
        return TYPE_NVME;
    }
    if disk.starts_with("vd") {
        return TYPE_VIRTIO;
    }
    match host
        .read_attr(format!("/sys/block/{disk}/queue/rotational"))
        .as_deref()
    {
        Some("1") => TYPE_HDD,
        Some("0") => TYPE_SSD,
        _ => TYPE_OTHER,
    }
}

/// The whole disk under a device node, following partitions, device-mapper and md.
pub fn underlying_disk(host: &HostRoot, device: &str) -> Option<String> {
    let name = device.strip_prefix("/dev/")?;
    let mut name = if let Some(mapped) = name.strip_prefix("mapper/") {
        host.list("/sys/block").into_iter().find(|dm| {
            host.read_attr(format!("/sys/block/{dm}/dm/name"))
                .is_some_and(|n| n == mapped)
        })?
    } else {
        name.to_owned()
    };
    for _ in 0..8 {
        if host.path(format!("/sys/block/{name}")).is_dir() {
            let slaves = host.list(format!("/sys/block/{name}/slaves"));
            match slaves.into_iter().next() {
                Some(slave) => name = slave,
                None => return Some(name),
            }
        } else {
            name = host
                .list("/sys/block")
                .into_iter()
                .find(|disk| host.path(format!("/sys/block/{disk}/{name}")).is_dir())?;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_block_devices_count_once_each() {
        let mounts = "proc /proc proc rw 0 0\n/dev/vda / ext4 rw 0 0\n/dev/loop0 /snap squashfs ro 0 0\n/dev/vda /run/netns ext4 rw 0 0\n/dev/sdb1 /data\\040disk xfs rw 0 0\n";
        assert_eq!(
            block_mounts(mounts),
            vec![
                ("/dev/vda".to_owned(), "/".to_owned()),
                ("/dev/sdb1".to_owned(), "/data disk".to_owned())
            ]
        );
    }
}
