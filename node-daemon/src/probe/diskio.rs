//! Cumulative bytes read and written per block device and partition from `/proc/diskstats`
//! (seed 002 §二.5 `diskio`). Loop and RAM disks are left out: they are not storage.
//! The kernel counts sectors of 512 bytes regardless of the device's sector size.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Probe, ProbeError, Sample, first_fields, parse_u64};
use crate::error::Failure;
use crate::host::HostRoot;

const FILE: &str = "/proc/diskstats";

/// Bytes moved by one device since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiskCounters {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

/// Counters by device name (`sda`, `sda1`, `nvme0n1`, `dm-0`).
pub type DiskIo = BTreeMap<String, DiskCounters>;

/// Reads [`DiskIo`].
pub struct DiskIoProbe;

impl Probe for DiskIoProbe {
    fn name(&self) -> &'static str {
        "diskio"
    }
    fn failure(&self) -> Failure {
        Failure::Storage
    }
    fn collect(&self, host: &HostRoot) -> Result<Sample, ProbeError> {
        parse(&host.read(FILE)?).map(Sample::DiskIo)
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
