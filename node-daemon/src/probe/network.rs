//! Physical NICs with address, mask, gateway, DNS, speed, MAC and link state (seed 002 §二.6
//! `network`, "已经过滤了虚拟网络设备": virtual devices are filtered out).
//!
//! A NIC is physical when `/sys/class/net/<nic>/device` exists (it is backed by a bus device:
//! PCI, virtio, USB) and it is not a bridge (`bridge/`), a tun/tap (`tun_flags`) or named like a
//! virtual device (`lo`, `veth*`, `docker*`, `cni*`, `flannel*`, `cali*`, `virbr*`, `vnet*`,
//! `tap*`, `tun*`). `--nics` replaces this rule with an explicit list.
//!
//! The IPv4 address and mask come from netlink (`getifaddrs`) in the daemon's network
//! namespace. A NIC enslaved to a bridge or bond (KVM hosts put the address on `br0`) reports
//! its master's address and gateway. The gateway is the NIC's default route in
//! `/proc/net/route`; `dns1`/`dns2` are the first two `nameserver`s of `/etc/resolv.conf`
//! (host-wide, so the same for every NIC). Missing values are empty strings; `speed` is in
//! Mb/s and 0 when the kernel does not know it (link down). Whether an interface is physical
//! is remembered per name while it exists, for at most 60 s.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::{Probe, ProbeError, Reading, first_fields, with_utc};
use crate::error::Failure;
use crate::host::{HostRoot, Ipv4Assignment};
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

/// One NIC in the seed's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicInfo {
    /// IPv4 address or "".
    pub ip: String,
    /// MAC address.
    pub mac: String,
    /// Netmask or "".
    pub mask: String,
    /// Default gateway through this NIC or "".
    pub gateway: String,
    /// First name server or "".
    pub dns1: String,
    /// Second name server or "".
    pub dns2: String,
    /// Link speed in Mb/s, 0 when unknown.
    pub speed: i64,
    /// Carrier present (cable connected, link up).
    pub stat: bool,
}

/// NICs by name.
pub type Nics = BTreeMap<String, NicInfo>;

/// Reads [`Nics`].
#[derive(Debug)]
pub struct NetworkProbe {
    /// Explicit NIC list replacing the physical-NIC rule.
    pub only: Option<Vec<String>>,
    /// The rule's verdict per interface name (four sysfs lookups each), made again every
    /// [`super::HARDWARE_REFRESH`]: when that map was started, and the map.
    physical: Mutex<(Option<Instant>, HashMap<String, bool>)>,
}

impl NetworkProbe {
    /// A probe reporting the NICs in `only`, or the physical NICs when `None`.
    pub fn new(only: Option<Vec<String>>) -> Self {
        Self {
            only,
            physical: Mutex::default(),
        }
    }
}

const VIRTUAL_PREFIXES: &[&str] = &[
    "veth", "docker", "cni", "flannel", "cali", "virbr", "vnet", "tap", "tun",
];

impl Probe for NetworkProbe {
    type Reading = Nics;
    fn failure(&self) -> Failure {
        Failure::Network
    }
    fn collect(&self, host: &HostRoot) -> Result<Nics, ProbeError> {
        std::fs::read_dir(host.path("/sys/class/net"))?;
        let addresses = host.ipv4_addresses()?;
        let routes = host.read("/proc/net/route").unwrap_or_default();
        let gateways = default_gateways(&routes);
        let (dns1, dns2) = name_servers(&host.read("/etc/resolv.conf").unwrap_or_default());
        let mut nics = Nics::new();
        let mut physical = self.physical.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if physical
            .0
            .is_none_or(|since| now.duration_since(since) >= super::HARDWARE_REFRESH)
        {
            *physical = (Some(now), HashMap::new());
        }
        let names = host.list("/sys/class/net");
        // interfaces that are gone are forgotten (veths come and go on a Kubernetes node)
        physical
            .1
            .retain(|name, _| names.binary_search(name).is_ok());
        for name in names {
            let wanted = match &self.only {
                Some(list) => list.contains(&name),
                None => *physical
                    .1
                    .entry(name.clone())
                    .or_insert_with(|| is_physical(host, &name)),
            };
            if !wanted {
                continue;
            }
            let dir = format!("/sys/class/net/{name}");
            let holder = address_holder(host, &name, &addresses);
            let assignment = addresses.get(&holder);
            nics.insert(
                name.clone(),
                NicInfo {
                    ip: assignment
                        .map(|a| a.address.to_string())
                        .unwrap_or_default(),
                    mask: assignment
                        .map(|a| a.netmask.to_string())
                        .unwrap_or_default(),
                    mac: host.read_attr(format!("{dir}/address")).unwrap_or_default(),
                    gateway: gateways
                        .get(&holder)
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    dns1: dns1.clone(),
                    dns2: dns2.clone(),
                    speed: host
                        .read_attr(format!("{dir}/speed"))
                        .and_then(|s| s.parse::<i64>().ok())
                        .filter(|s| *s > 0)
                        .unwrap_or(0),
                    stat: host.read_attr(format!("{dir}/carrier")).as_deref() == Some("1"),
                },
            );
        }
        Ok(nics)
    }
}

impl Reading for Nics {
    fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
        with_utc(self, snapshot.utc)
    }
    fn write_metrics(&self, _snapshot: &Snapshot, out: &mut Exposition<'_>) {
        out.gauge(
            "opsplane_node_network_up",
            "1 when the physical NIC has carrier",
            self.iter()
                .map(|(d, n)| (vec![("device", d.clone())], f64::from(u8::from(n.stat)))),
        );
        out.gauge(
            "opsplane_node_network_speed_bytes",
            "Link speed of the physical NIC in bytes per second",
            self.iter()
                .map(|(d, n)| (vec![("device", d.clone())], n.speed as f64 * 125_000.0)),
        );
        out.gauge(
            "opsplane_node_network_info",
            "Addresses of the physical NIC",
            self.iter().map(|(d, n)| {
                (
                    vec![
                        ("device", d.clone()),
                        ("address", n.mac.clone()),
                        ("ip", n.ip.clone()),
                        ("gateway", n.gateway.clone()),
                    ],
                    1.0,
                )
            }),
        );
    }
}

/// Whether `name` is a physical NIC by the module's rule.
pub fn is_physical(host: &HostRoot, name: &str) -> bool {
    let dir = host.path(format!("/sys/class/net/{name}"));
    name != "lo"
        && !VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
        && dir.join("device").exists()
        && !dir.join("bridge").exists()
        && !dir.join("tun_flags").exists()
}

/// The interface holding `name`'s address: itself, else its bridge/bond master (two levels).
fn address_holder(
    host: &HostRoot,
    name: &str,
    addresses: &BTreeMap<String, Ipv4Assignment>,
) -> String {
    let mut current = name.to_owned();
    for _ in 0..2 {
        if addresses.contains_key(&current) {
            break;
        }
        let master = std::fs::read_link(host.path(format!("/sys/class/net/{current}/master")))
            .ok()
            .and_then(|target| {
                target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
            });
        match master {
            Some(m) => current = m,
            None => break,
        }
    }
    if addresses.contains_key(&current) {
        current
    } else {
        name.to_owned()
    }
}

/// Default gateways by interface from `/proc/net/route`.
pub fn default_gateways(routes: &str) -> BTreeMap<String, Ipv4Addr> {
    const RTF_GATEWAY: u32 = 0x2;
    let mut out = BTreeMap::new();
    for line in routes.lines().skip(1) {
        let Some(f) = first_fields::<8>(line) else {
            continue;
        };
        if f[1] != "00000000" || f[7] != "00000000" {
            continue;
        }
        let (Ok(gateway), Ok(flags)) =
            (u32::from_str_radix(f[2], 16), u32::from_str_radix(f[3], 16))
        else {
            continue;
        };
        if flags & RTF_GATEWAY != 0 {
            // The kernel prints the network-order address as a native integer.
            out.entry(f[0].to_owned())
                .or_insert_with(|| Ipv4Addr::from(gateway.to_ne_bytes()));
        }
    }
    out
}

/// The first two name servers of a resolv.conf, "" where missing.
pub fn name_servers(resolv_conf: &str) -> (String, String) {
    let mut servers = resolv_conf.lines().filter_map(|line| {
        let mut f = line.split_whitespace();
        (f.next() == Some("nameserver")).then(|| f.next().map(str::to_owned))?
    });
    (
        servers.next().unwrap_or_default(),
        servers.next().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_physical_verdict_is_kept_while_the_interface_exists() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        let nic = |name: &str, device: bool| {
            let d = dir.path().join("sys/class/net").join(name);
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            if device {
                std::fs::create_dir_all(d.join("device")).unwrap();
            }
        };
        let names = |probe: &NetworkProbe| {
            probe
                .collect(&host)
                .unwrap()
                .into_keys()
                .collect::<Vec<_>>()
        };
        nic("eth0", true);
        nic("br0", false);
        let probe = NetworkProbe::new(None);
        assert_eq!(names(&probe), ["eth0"]);
        // same name, no bus device any more: the kept verdict stands ...
        nic("eth0", false);
        assert_eq!(names(&probe), ["eth0"]);
        // ... until the interface is gone for a cycle
        std::fs::remove_dir_all(dir.path().join("sys/class/net/eth0")).unwrap();
        assert!(names(&probe).is_empty());
        nic("eth0", false);
        assert!(names(&probe).is_empty());
        nic("eth0", true);
        assert!(names(&NetworkProbe::new(None)) == ["eth0"]);
    }

    #[test]
    fn default_route_gateway_is_decoded_per_interface() {
        let routes = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        let gw = default_gateways(routes);
        assert_eq!(gw.len(), 1);
        assert_eq!(gw["eth0"], Ipv4Addr::new(192, 0, 2, 1));
    }

    #[test]
    fn first_two_name_servers_are_dns1_and_dns2() {
        let conf = "# comment\nsearch example\nnameserver 114.114.114.114\nnameserver 8.8.8.8\nnameserver 1.1.1.1\n";
        assert_eq!(
            name_servers(conf),
            ("114.114.114.114".to_owned(), "8.8.8.8".to_owned())
        );
        assert_eq!(name_servers(""), (String::new(), String::new()));
    }
}
