//! Hardware inventory (seed 002 §二.9 `hardware`): model → count maps for CPUs, disks,
//! graphics cards and memory modules, plus the OS variant.
//!
//! - `server_version`: `VARIANT` of `/etc/os-release` (the seed's rule), else `PRETTY_NAME`.
//! - `cpu`: `model name` of each logical processor in `/proc/cpuinfo`.
//! - `disk`: each whole disk with a bus device in `/sys/block` (no loop/dm/md/zram, no optical
//!   `sr*`): `device/vendor` + `device/model`; disks without a model (virtio) by driver name.
//! - `gfxcard`: PCI functions of class 0x03 (display) in `/sys/bus/pci/devices`, named from
//!   the host's `pci.ids` when it has one, else `vendor:device` in hex.
//! - `memory`: populated SMBIOS type 17 (memory device) entries from
//!   `/sys/firmware/dmi/entries/17-*/raw`: manufacturer + part number, `unknown` when the
//!   firmware leaves both empty. Empty when the firmware exposes no DMI table.
//!
//! The inventory hardly ever changes and reading it is costly (`/proc/cpuinfo`, the PCI and
//! DMI trees, `pci.ids`), so it is read again only every [`super::HARDWARE_REFRESH`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{Probe, ProbeError, Reading, with_utc};
use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

/// Model → count.
pub type Inventory = BTreeMap<String, u64>;

/// The seed's hardware inventory (without `utc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hardware {
    /// OS variant.
    pub server_version: String,
    /// CPU models.
    pub cpu: Inventory,
    /// Disk models.
    pub disk: Inventory,
    /// Graphics cards.
    pub gfxcard: Inventory,
    /// Memory modules.
    pub memory: Inventory,
}

/// Reads [`Hardware`].
pub struct HardwareProbe;

impl Probe for HardwareProbe {
    type Reading = Hardware;
    fn failure(&self) -> Failure {
        Failure::Hardware
    }
    fn refresh(&self) -> Option<std::time::Duration> {
        Some(super::HARDWARE_REFRESH)
    }
    fn collect(&self, host: &HostRoot) -> Result<Hardware, ProbeError> {
        let cpuinfo = host.read("/proc/cpuinfo")?;
        Ok(Hardware {
            server_version: server_version(
                &host
                    .read("/etc/os-release")
                    .or_else(|_| host.read("/usr/lib/os-release"))
                    .unwrap_or_default(),
            ),
            cpu: cpu_models(&cpuinfo),
            disk: disk_models(host),
            gfxcard: graphics_cards(host),
            memory: memory_modules(host),
        })
    }
}

impl Reading for Hardware {
    fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
        with_utc(self, snapshot.utc)
    }
    fn write_metrics(&self, _snapshot: &Snapshot, out: &mut Exposition<'_>) {
        let kinds = [
            ("cpu", &self.cpu),
            ("disk", &self.disk),
            ("gfxcard", &self.gfxcard),
            ("memory", &self.memory),
        ];
        out.gauge(
            "opsplane_node_hardware_devices",
            "Hardware inventory: devices per kind and model",
            kinds.iter().flat_map(|(kind, inv)| {
                inv.iter().map(move |(model, n)| {
                    (
                        vec![("kind", (*kind).to_owned()), ("model", model.clone())],
                        *n as f64,
                    )
                })
            }),
        );
    }
}

/// `VARIANT`, else `PRETTY_NAME`, of an os-release file.
pub fn server_version(os_release: &str) -> String {
    let value = |key: &str| {
        os_release.lines().find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_owned())
        })
    };
    value("VARIANT")
        .filter(|v| !v.is_empty())
        .or_else(|| value("PRETTY_NAME"))
        .unwrap_or_default()
}

/// Logical processors per `model name`.
pub fn cpu_models(cpuinfo: &str) -> Inventory {
    let mut out = Inventory::new();
    for line in cpuinfo.lines() {
        if let Some((key, value)) = line.split_once(':')
            && key.trim() == "model name"
        {
            *out.entry(value.trim().to_owned()).or_default() += 1;
        }
    }
    out
}

fn disk_models(host: &HostRoot) -> Inventory {
    let mut out = Inventory::new();
    for disk in host.list("/sys/block") {
        let device = format!("/sys/block/{disk}/device");
        if disk.starts_with("sr") || !host.path(&device).exists() {
            continue;
        }
        let model = host
            .read_attr(format!("{device}/model"))
            .unwrap_or_default();
        let vendor = host
            .read_attr(format!("{device}/vendor"))
            .filter(|v| !v.starts_with("0x"))
            .unwrap_or_default();
        let mut name = format!("{vendor} {model}").trim().to_owned();
        if name.is_empty() {
            name = std::fs::read_link(host.path(format!("{device}/driver")))
                .ok()
                .and_then(|t| t.file_name().and_then(|n| n.to_str()).map(str::to_owned))
                .unwrap_or_else(|| "unknown".to_owned());
        }
        *out.entry(name).or_default() += 1;
    }
    out
}

fn graphics_cards(host: &HostRoot) -> Inventory {
    let ids = host
        .read("/usr/share/hwdata/pci.ids")
        .or_else(|_| host.read("/usr/share/misc/pci.ids"))
        .unwrap_or_default();
    let mut out = Inventory::new();
    for function in host.list("/sys/bus/pci/devices") {
        let dir = format!("/sys/bus/pci/devices/{function}");
        if !host
            .read_attr(format!("{dir}/class"))
            .is_some_and(|c| c.starts_with("0x03"))
        {
            continue;
        }
        let hex = |attr: &str| {
            host.read_attr(format!("{dir}/{attr}"))
                .map(|v| v.trim_start_matches("0x").to_lowercase())
                .unwrap_or_default()
        };
        let name = pci_name(&ids, &hex("vendor"), &hex("device"));
        *out.entry(name).or_default() += 1;
    }
    out
}

/// "Vendor Device" from a pci.ids database, else `vendor:device`.
pub fn pci_name(ids: &str, vendor: &str, device: &str) -> String {
    let mut vendor_name = None;
    for line in ids.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if !line.starts_with('\t') {
            if vendor_name.is_some() {
                break;
            }
            if let Some(name) = line.strip_prefix(vendor).and_then(|r| r.strip_prefix("  ")) {
                vendor_name = Some(name.trim().to_owned());
            }
        } else if let Some(vendor_name) = &vendor_name
            && let Some(name) = line
                .strip_prefix('\t')
                .and_then(|l| l.strip_prefix(device))
                .and_then(|r| r.strip_prefix("  "))
        {
            return format!("{vendor_name} {}", name.trim());
        }
    }
    match vendor_name {
        Some(v) => format!("{v} {device}"),
        None => format!("{vendor}:{device}"),
    }
}

fn memory_modules(host: &HostRoot) -> Inventory {
    let mut out = Inventory::new();
    for entry in host.list("/sys/firmware/dmi/entries") {
        if !entry.starts_with("17-") {
            continue;
        }
        let Ok(raw) = std::fs::read(host.path(format!("/sys/firmware/dmi/entries/{entry}/raw")))
        else {
            continue;
        };
        if let Some(name) = memory_device_name(&raw) {
            *out.entry(name).or_default() += 1;
        }
    }
    out
}

/// Manufacturer + part number of a populated SMBIOS memory device (type 17) structure;
/// `None` for an empty slot or a malformed structure.
pub fn memory_device_name(raw: &[u8]) -> Option<String> {
    let length = usize::from(*raw.get(1)?);
    if *raw.first()? != 17 || length < 0x1B || raw.len() < length {
        return None;
    }
    let size = u16::from_le_bytes([raw[0x0C], raw[0x0D]]);
    if size == 0 {
        return None;
    }
    let strings: Vec<String> = raw[length..]
        .split(|b| *b == 0)
        .take_while(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).trim().to_owned())
        .collect();
    let string = |index: u8| {
        usize::from(index)
            .checked_sub(1)
            .and_then(|i| strings.get(i))
            .cloned()
            .unwrap_or_default()
    };
    let name = format!("{} {}", string(raw[0x17]), string(raw[0x1A]))
        .trim()
        .to_owned();
    Some(if name.is_empty() {
        "unknown".to_owned()
    } else {
        name
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_wins_over_pretty_name() {
        assert_eq!(
            server_version("NAME=x\nVARIANT=\"YI Server 5.0\"\nPRETTY_NAME=\"CentOS 7\"\n"),
            "YI Server 5.0"
        );
        assert_eq!(server_version("PRETTY_NAME=\"Debian 13\"\n"), "Debian 13");
    }

    #[test]
    fn pci_ids_name_vendor_and_device() {
        let ids = "# c\n1234  Other\n\t1111  Thing\n15ad  VMware\n\t0405  SVGA II Adapter\n\t0710  SVGA Adapter\n1af4  Red Hat\n";
        assert_eq!(pci_name(ids, "15ad", "0405"), "VMware SVGA II Adapter");
        assert_eq!(pci_name(ids, "15ad", "9999"), "VMware 9999");
        assert_eq!(pci_name(ids, "abcd", "0001"), "abcd:0001");
    }

    #[test]
    fn smbios_memory_device_names_and_empty_slots() {
        let mut raw = vec![0u8; 0x28];
        raw[0] = 17;
        raw[1] = 0x28;
        raw[0x0C] = 0x00;
        raw[0x0D] = 0x40; // 16 GiB
        raw[0x17] = 1;
        raw[0x1A] = 2;
        raw.extend_from_slice(b"Samsung\0M393A2K43BB1-CTD  \0\0");
        assert_eq!(
            memory_device_name(&raw).as_deref(),
            Some("Samsung M393A2K43BB1-CTD")
        );
        raw[0x0D] = 0;
        assert_eq!(memory_device_name(&raw), None);
        assert_eq!(memory_device_name(&[17, 0x28, 0]), None);
    }
}
