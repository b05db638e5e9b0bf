//! Cumulative bytes read and written per block device and partition from `/proc/diskstats`
//! (seed 002 §二.5 `diskio`). Loop and RAM disks are left out: they are not storage.
//! The kernel counts sectors of 512 bytes regardless of the device's sector size.

use std::collections::BTreeMap;

pub use opsplane_resources::node_report::DiskCounters;
use serde_json::Value;

use super::{Probe, ProbeError, Reading, first_fields, parse_u64, with_utc};
use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

const FILE: &str = "/proc/diskstats";

/// Counters by device name (`sda`, `sda1`, `nvme0n1`, `dm-0`); as the §四.1 report's
/// `diskio` carries them.
pub type DiskIo = BTreeMap<String, DiskCounters>;

/// Reads [`DiskIo`].
pub struct DiskIoProbe;

impl Probe for DiskIoProbe {
    type Reading = DiskIo;
    fn failure(&self) -> Failure {
        Failure::Storage
    }
    fn collect(&self, host: &HostRoot) -> Result<DiskIo, ProbeError> {
        parse(&host.read(FILE)?)
    }
}

impl Reading for DiskIo {
    fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
        with_utc(self, snapshot.utc)
    }
    fn write_metrics(&self, _snapshot: &Snapshot, out: &mut Exposition<'_>) {
        out.counter(
            "opsplane_node_disk_read_bytes_total",
            "Bytes read from the block device",
            self.iter()
                .map(|(d, c)| (vec![("device", d.clone())], c.read_bytes as f64)),
        );
        out.counter(
            "opsplane_node_disk_written_bytes_total",
            "Bytes written to the block device",
            self.iter()
                .map(|(d, c)| (vec![("device", d.clone())], c.write_bytes as f64)),
        );
    }
}

/// Parses `/proc/diskstats`.
pub fn parse(text: &str) -> Result<DiskIo, ProbeError> {
    let mut out = DiskIo::new();
    for line in text.lines() {
        let Some(fields) = first_fields::<10>(line) else {
            continue;
        };
        let name = fields[2];
        if name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        out.insert(
            name.to_owned(),
            DiskCounters {
                read_bytes: parse_u64(FILE, fields[5])?.saturating_mul(512),
                write_bytes: parse_u64(FILE, fields[9])?.saturating_mul(512),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_become_bytes_and_loop_devices_are_skipped() {
        let io = parse("   7 0 loop0 1 0 8 0 1 0 8 0 0 0 0\n 8 0 sda 10 0 4 0 10 0 2 0 0 0 0\n")
            .unwrap();
        assert_eq!(io.len(), 1);
        assert_eq!(
            io["sda"],
            DiskCounters {
                read_bytes: 2048,
                write_bytes: 1024
            }
        );
    }
}
