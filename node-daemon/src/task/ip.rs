//! The NIC configuration tasks (seed 002 §二.12–15): `add_ip`, `update_ip`, `delete_ip` and
//! `exchange_ip` of IPv4 configurations named like `eth0:0` (an address on `eth0` carrying the
//! label `eth0:0`; `eth0` alone names the NIC's own address, allowed in exchange_ip).
//!
//! Addresses change through netlink (RTM_NEWADDR / RTM_DELADDR with IFA_LABEL, the `rtnetlink`
//! crate) in the daemon's network namespace (`hostNetwork` in the DaemonSet), and every
//! configuration persists as an ifcfg-style file `<--ip-config-dir>/ifcfg-<name>`:
//!
//! ```text
//! # opsplane-node-daemon IP configuration (seed 002 add_ip/update_ip/exchange_ip)
//! DEVICE=eth0:0
//! ONBOOT=yes
//! BOOTPROTO=static
//! IPADDR=172.16.1.34
//! NETMASK=255.255.255.0
//! PREFIX=24
//! GATEWAY=172.16.1.254
//! DNS1=8.8.8.8
//! DNS2=114.114.114.114
//! ```
//!
//! (the keys of RHEL/CentOS network-scripts, which the seed's platform used; `GATEWAY`,
//! `DNS1`, `DNS2` are kept for the host's network tooling: a NIC has one default route, owned
//! by its own configuration, so no route is installed for a labelled address). At start the
//! daemon re-adds the labelled addresses of these files that are missing ([`restore`]).
//!
//! Order of work: parse and validate everything (30006 bad IP / mask / gateway / DNS, 30005 a
//! name longer than 15 bytes, IFNAMSIZ) → look the device up (30003) and check the request
//! against the device's addresses and files (30006: exists / does not exist / address taken)
//! → change the addresses → write the files. A change is computed as the full wanted address
//! list of the device and converged to (addresses the kernel drops as a side effect, such as
//! secondaries of a deleted subnet primary, are put back); if any step fails, files and
//! addresses are restored to what they were before and the answer is 99999 saying so.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use serde_json::{Value, json};

use super::{TaskError, clip};

/// Longest interface name or label (IFNAMSIZ − 1).
pub const MAX_NAME: usize = 15;

/// One IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// `eth0:0` (or `eth0` for the NIC's own address).
    pub name: String,
    /// The address.
    pub ip: Ipv4Addr,
    /// Prefix length from the netmask.
    pub prefix: u8,
    /// Gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// First DNS server, if any.
    pub dns1: Option<Ipv4Addr>,
    /// Second DNS server, if any.
    pub dns2: Option<Ipv4Addr>,
}

impl IpConfig {
    /// The NIC the configuration is on (`eth0` of `eth0:0`).
    pub fn device(&self) -> &str {
        device_of(&self.name)
    }

    /// The dotted netmask.
    pub fn netmask(&self) -> Ipv4Addr {
        mask_of(self.prefix)
    }

    fn addr(&self) -> Addr {
        Addr {
            ip: self.ip,
            prefix: self.prefix,
            label: self.name.clone(),
        }
    }

    /// The seed's body fields.
    pub fn to_seed(&self) -> Value {
        let opt = |v: Option<Ipv4Addr>| v.map(|a| a.to_string()).unwrap_or_default();
        json!({
            "name": self.name,
            "ip": self.ip.to_string(),
            "netmask": self.netmask().to_string(),
            "gateway": opt(self.gateway),
            "dns1": opt(self.dns1),
            "dns2": opt(self.dns2),
        })
    }

    /// The ifcfg file text.
    pub fn to_ifcfg(&self) -> String {
        let mut text = format!(
            "# opsplane-node-daemon IP configuration (seed 002 add_ip/update_ip/exchange_ip)\nDEVICE={}\nONBOOT=yes\nBOOTPROTO=static\nIPADDR={}\nNETMASK={}\nPREFIX={}\n",
            self.name,
            self.ip,
            self.netmask(),
            self.prefix
        );
        for (key, value) in [
            ("GATEWAY", self.gateway),
            ("DNS1", self.dns1),
            ("DNS2", self.dns2),
        ] {
            if let Some(v) = value {
                text.push_str(&format!("{key}={v}\n"));
            }
        }
        text
    }

    /// Reads an ifcfg file's text (`KEY=VALUE` lines, optional quotes, `#` comments).
    pub fn from_ifcfg(text: &str) -> Result<Self, String> {
        let mut get = std::collections::HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {line:?} is not KEY=VALUE"));
            };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            get.insert(key.trim().to_owned(), value.to_owned());
        }
        let field = |k: &str| get.get(k).map(String::as_str).unwrap_or_default();
        let name = field("DEVICE");
        check_name(name, false).map_err(|e| e.to_string())?;
        let ip = parse_ip(field("IPADDR"), "IPADDR").map_err(|e| e.to_string())?;
        let prefix = if get.contains_key("NETMASK") {
            parse_mask(field("NETMASK")).map_err(|e| e.to_string())?
        } else {
            parse_mask(field("PREFIX")).map_err(|e| e.to_string())?
        };
        let opt = |k: &str| parse_opt(field(k), k).map_err(|e| e.to_string());
        Ok(Self {
            name: name.to_owned(),
            ip,
            prefix,
            gateway: opt("GATEWAY")?,
            dns1: opt("DNS1")?,
            dns2: opt("DNS2")?,
        })
    }
}

/// An IP task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpTask {
    /// add_ip (§二.12).
    Add(IpConfig),
    /// update_ip (§二.13).
    Update(IpConfig),
    /// delete_ip (§二.14): by name; when `ip` is given it must be the configured address.
    Delete {
        /// `eth0:0`.
        name: String,
        /// The address the caller believes the configuration has.
        ip: Option<Ipv4Addr>,
    },
    /// exchange_ip (§二.14 bis): the two configurations swap address, mask, gateway and DNS.
    Exchange {
        /// First configuration.
        name1: String,
        /// Second configuration.
        name2: String,
    },
}

impl IpTask {
    /// Parses the body of `add_ip`, `update_ip`, `delete_ip` or `exchange_ip`.
    pub fn parse(command: &str, body: &Value) -> Result<Self, TaskError> {
        match command {
            "add_ip" => Ok(Self::Add(parse_config(body)?)),
            "update_ip" => Ok(Self::Update(parse_config(body)?)),
            "delete_ip" => {
                let name = string(body, "name")?;
                check_name(name, true)?;
                let ip = match body.get("ip") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => None,
                    Some(Value::String(s)) => Some(parse_ip(s, "ip")?),
                    Some(_) => return Err(TaskError::Invalid("ip must be a string".into())),
                };
                Ok(Self::Delete {
                    name: name.to_owned(),
                    ip,
                })
            }
            "exchange_ip" => {
                let name1 = string(body, "name1")?;
                let name2 = string(body, "name2")?;
                check_name(name1, false)?;
                check_name(name2, false)?;
                if name1 == name2 {
                    return Err(TaskError::Invalid(format!(
                        "name1 and name2 are both {name1:?}; exchange_ip swaps two configurations"
                    )));
                }
                Ok(Self::Exchange {
                    name1: name1.to_owned(),
                    name2: name2.to_owned(),
                })
            }
            other => Err(TaskError::Unsupported(format!(
                "IP tasks are add_ip, update_ip, delete_ip and exchange_ip, not {:?}",
                clip(other)
            ))),
        }
    }

    /// The endpoint / command name.
    pub fn command(&self) -> &'static str {
        match self {
            Self::Add(_) => "add_ip",
            Self::Update(_) => "update_ip",
            Self::Delete { .. } => "delete_ip",
            Self::Exchange { .. } => "exchange_ip",
        }
    }

    /// Data for the audit log.
    pub fn audit_data(&self) -> Value {
        match self {
            Self::Add(c) | Self::Update(c) => c.to_seed(),
            Self::Delete { name, ip } => json!({"name": name, "ip": ip.map(|i| i.to_string())}),
            Self::Exchange { name1, name2 } => json!({"name1": name1, "name2": name2}),
        }
    }
}

fn string<'a>(body: &'a Value, name: &str) -> Result<&'a str, TaskError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(TaskError::Invalid(format!("{name} must be a string"))),
        None => Err(TaskError::Invalid(format!("{name} is required"))),
    }
}

fn device_of(name: &str) -> &str {
    name.split_once(':').map(|(d, _)| d).unwrap_or(name)
}

/// Checks a configuration name: `nic:label` (or `nic` when `alias_required` is false).
fn check_name(name: &str, alias_required: bool) -> Result<(), TaskError> {
    let ok_char = |c: char| c.is_ascii_graphic() && c != '/' && c != ':';
    let (dev, alias) = match name.split_once(':') {
        Some((d, a)) => (d, Some(a)),
        None => (name, None),
    };
    let well_formed = !dev.is_empty()
        && dev.chars().all(ok_char)
        && alias.is_none_or(|a| {
            !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        && (alias.is_some() || !alias_required);
    if !well_formed {
        let shape = if alias_required {
            "<nic>:<n>"
        } else {
            "<nic> or <nic>:<n>"
        };
        return Err(TaskError::Invalid(format!(
            "name {:?} is not {shape} such as \"eth0:0\"",
            clip(name)
        )));
    }
    if name.len() > MAX_NAME {
        return Err(TaskError::NameTooLong(format!(
            "{name:?} is {} bytes; interface names and labels have at most {MAX_NAME} (IFNAMSIZ)",
            name.len()
        )));
    }
    Ok(())
}

fn parse_ip(text: &str, field: &str) -> Result<Ipv4Addr, TaskError> {
    let ip: Ipv4Addr = text.trim().parse().map_err(|_| {
        TaskError::Invalid(format!("{field} {:?} is not an IPv4 address", clip(text)))
    })?;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
        return Err(TaskError::Invalid(format!(
            "{field} {ip} is not a unicast host address"
        )));
    }
    Ok(ip)
}

fn parse_opt(text: &str, field: &str) -> Result<Option<Ipv4Addr>, TaskError> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        parse_ip(text, field).map(Some)
    }
}

/// A dotted netmask with contiguous ones (or a prefix length 1–32) → prefix length.
fn parse_mask(text: &str) -> Result<u8, TaskError> {
    let bad = || {
        TaskError::Invalid(format!(
            "netmask {:?} is not a netmask such as 255.255.255.0",
            clip(text)
        ))
    };
    let text = text.trim();
    if let Ok(prefix) = text.trim_start_matches('/').parse::<u8>() {
        return if (1..=32).contains(&prefix) {
            Ok(prefix)
        } else {
            Err(bad())
        };
    }
    let mask = u32::from(text.parse::<Ipv4Addr>().map_err(|_| bad())?);
    let prefix = mask.leading_ones();
    if prefix == 0 || mask.checked_shl(prefix).unwrap_or(0) != 0 {
        return Err(bad());
    }
    Ok(prefix as u8)
}

fn mask_of(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

fn parse_config(body: &Value) -> Result<IpConfig, TaskError> {
    let name = string(body, "name")?;
    check_name(name, true)?;
    let ip = parse_ip(string(body, "ip")?, "ip")?;
    let prefix = parse_mask(string(body, "netmask")?)?;
    let opt = |field: &str| match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_opt(s, field),
        Some(_) => Err(TaskError::Invalid(format!("{field} must be a string"))),
    };
    let config = IpConfig {
        name: name.to_owned(),
        ip,
        prefix,
        gateway: opt("gateway")?,
        dns1: opt("dns1")?,
        dns2: opt("dns2")?,
    };
    let network = u32::from(ip) & u32::from(config.netmask());
    let host_bits = !u32::from(config.netmask());
    if prefix <= 30 && (u32::from(ip) == network || u32::from(ip) == network | host_bits) {
        return Err(TaskError::Invalid(format!(
            "ip {ip} is the network or broadcast address of {}/{prefix}",
            Ipv4Addr::from(network)
        )));
    }
    if let Some(gateway) = config.gateway {
        let g = u32::from(gateway);
        if gateway == ip {
            return Err(TaskError::Invalid(format!(
                "gateway {gateway} is the address itself"
            )));
        }
        if prefix <= 30
            && (g & u32::from(config.netmask()) != network
                || g == network
                || g == network | host_bits)
        {
            return Err(TaskError::Invalid(format!(
                "gateway {gateway} is not a host of {}/{prefix}",
                Ipv4Addr::from(network)
            )));
        }
    }
    Ok(config)
}

/// An IPv4 address on a device as netlink sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Addr {
    ip: Ipv4Addr,
    prefix: u8,
    label: String,
}

struct Netlink {
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn netlink_failure(what: &str, error: &rtnetlink::Error) -> TaskError {
    TaskError::Failed(format!("{what}: {error}"))
}

impl Netlink {
    fn connect() -> Result<Self, TaskError> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| TaskError::Failed(format!("cannot open a netlink socket: {e}")))?;
        Ok(Self {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    fn index(device: &str) -> Result<u32, TaskError> {
        nix::net::if_::if_nametoindex(device).map_err(|e| match e {
            nix::errno::Errno::ENODEV => TaskError::DeviceNotFound(format!(
                "there is no network device {device:?} on this node"
            )),
            other => TaskError::Failed(format!("cannot look up {device:?}: {other}")),
        })
    }

    async fn addresses(&self, index: u32, device: &str) -> Result<Vec<Addr>, TaskError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(message) = stream
            .try_next()
            .await
            .map_err(|e| netlink_failure("cannot list addresses", &e))?
        {
            if message.header.family != AddressFamily::Inet || message.header.index != index {
                continue;
            }
            let mut ip = None;
            let mut label = None;
            for attribute in &message.attributes {
                match attribute {
                    AddressAttribute::Local(IpAddr::V4(a)) => ip = Some(*a),
                    AddressAttribute::Address(IpAddr::V4(a)) if ip.is_none() => ip = Some(*a),
                    AddressAttribute::Label(l) => label = Some(l.clone()),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(Addr {
                    ip,
                    prefix: message.header.prefix_len,
                    label: label.unwrap_or_else(|| device.to_owned()),
                });
            }
        }
        Ok(out)
    }

    async fn add(&self, index: u32, addr: &Addr) -> Result<(), TaskError> {
        let mut request = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr.ip), addr.prefix);
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Label(addr.label.clone()));
        request.execute().await.map_err(|e| {
            netlink_failure(
                &format!("cannot add {}/{} as {}", addr.ip, addr.prefix, addr.label),
                &e,
            )
        })
    }

    async fn del(&self, index: u32, addr: &Addr) -> Result<(), TaskError> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = addr.prefix;
        message.header.index = index;
        message
            .attributes
            .push(AddressAttribute::Local(IpAddr::V4(addr.ip)));
        message
            .attributes
            .push(AddressAttribute::Label(addr.label.clone()));
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            // Already gone (the kernel removed it with its subnet's primary).
            Err(rtnetlink::Error::NetlinkError(m))
                if m.code.map(|c| -c.get()) == Some(libc::EADDRNOTAVAIL) =>
            {
                Ok(())
            }
            Err(e) => Err(netlink_failure(
                &format!("cannot delete {}/{} ({})", addr.ip, addr.prefix, addr.label),
                &e,
            )),
        }
    }

    /// Makes the device's IPv4 addresses exactly `wanted` (order: as listed, so a NIC's own
    /// address goes first and becomes its subnet's primary).
    async fn converge(&self, index: u32, device: &str, wanted: &[Addr]) -> Result<(), TaskError> {
        let current = self.addresses(index, device).await?;
        // Secondaries are listed after their primary: delete from the end.
        for addr in current.iter().rev() {
            if !wanted.contains(addr) {
                self.del(index, addr).await?;
            }
        }
        let now = self.addresses(index, device).await?;
        for addr in wanted {
            if !now.contains(addr) {
                self.add(index, addr).await?;
            }
        }
        let after = self.addresses(index, device).await?;
        let missing: Vec<String> = wanted
            .iter()
            .filter(|a| !after.contains(a))
            .map(|a| format!("{}/{} {}", a.ip, a.prefix, a.label))
            .collect();
        if !missing.is_empty() || after.len() != wanted.len() {
            return Err(TaskError::Failed(format!(
                "{device} did not take the wanted addresses (missing: {})",
                missing.join(", ")
            )));
        }
        Ok(())
    }
}

fn config_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("ifcfg-{name}"))
}

fn read_config(dir: &Path, name: &str) -> Result<Option<IpConfig>, TaskError> {
    let path = config_path(dir, name);
    match std::fs::read_to_string(&path) {
        Ok(text) => IpConfig::from_ifcfg(&text).map(Some).map_err(|e| {
            TaskError::Failed(format!(
                "{} is not a usable ifcfg file: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TaskError::Failed(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// One device's part of a change.
struct DeviceChange {
    index: u32,
    device: String,
    before: Vec<Addr>,
    wanted: Vec<Addr>,
}

/// Applies address changes, then file changes; on any failure restores both.
async fn transact(
    netlink: &Netlink,
    dir: &Path,
    devices: &[DeviceChange],
    files: &[(String, Option<IpConfig>)],
) -> Result<(), TaskError> {
    let mut backups = Vec::new();
    for (name, _) in files {
        let path = config_path(dir, name);
        let old = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(TaskError::Failed(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        backups.push((path, old));
    }
    let mut result = Ok(());
    for change in devices {
        result = netlink
            .converge(change.index, &change.device, &change.wanted)
            .await;
        if result.is_err() {
            break;
        }
    }
    // Files changed so far: only those are restored.
    let mut touched = 0;
    if result.is_ok() {
        for (name, config) in files {
            let path = config_path(dir, name);
            let written = match config {
                Some(c) => write_atomic(&path, c.to_ifcfg().as_bytes()),
                None => std::fs::remove_file(&path).or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                }),
            };
            if let Err(e) = written {
                result = Err(TaskError::Failed(format!(
                    "cannot write {}: {e}",
                    path.display()
                )));
                break;
            }
            touched += 1;
        }
    }
    let Err(error) = result else { return Ok(()) };
    let mut problems = Vec::new();
    for (path, old) in backups.iter().take(touched) {
        let restored = match old {
            Some(bytes) => write_atomic(path, bytes),
            None => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(e) = restored {
            problems.push(format!("{}: {e}", path.display()));
        }
    }
    for change in devices {
        if let Err(e) = netlink
            .converge(change.index, &change.device, &change.before)
            .await
        {
            problems.push(e.to_string());
        }
    }
    let message = error.detail();
    if problems.is_empty() {
        tracing::warn!(%message, "IP task failed half-way; rolled back");
        Err(TaskError::Failed(format!(
            "{message}; every change was rolled back"
        )))
    } else {
        tracing::error!(%message, problems = %problems.join("; "), "IP task failed and its rollback is incomplete");
        Err(TaskError::Failed(format!(
            "{message}; rolling back failed too: {}",
            problems.join("; ")
        )))
    }
}

/// A configuration as it stands: the file when there is one (gateway, DNS), with the address
/// the device really has under that label; else the device's address alone.
fn current_config(dir: &Path, name: &str, addrs: &[Addr]) -> Result<Option<IpConfig>, TaskError> {
    let file = read_config(dir, name)?;
    let live = addrs.iter().find(|a| a.label == name);
    Ok(match (file, live) {
        (Some(mut c), Some(a)) => {
            c.ip = a.ip;
            c.prefix = a.prefix;
            Some(c)
        }
        (Some(c), None) => Some(c),
        (None, Some(a)) => Some(IpConfig {
            name: name.to_owned(),
            ip: a.ip,
            prefix: a.prefix,
            gateway: None,
            dns1: None,
            dns2: None,
        }),
        (None, None) => None,
    })
}

/// Runs an IP task (the caller serializes IP tasks).
pub async fn run(dir: &Path, task: IpTask) -> Result<Value, TaskError> {
    let netlink = Netlink::connect()?;
    let taken = |addrs: &[Addr], c: &IpConfig| {
        addrs
            .iter()
            .find(|a| a.label != c.name && a.ip == c.ip && a.prefix == c.prefix)
            .map(|a| {
                TaskError::Invalid(format!(
                    "{}/{} is already on {} as {}",
                    c.ip,
                    c.prefix,
                    c.device(),
                    a.label
                ))
            })
    };
    let no_config = |name: &str| {
        TaskError::Invalid(format!(
            "there is no IP configuration {name:?} on this node (neither an address labelled so nor a file)"
        ))
    };
    match task {
        IpTask::Add(config) => {
            let device = config.device().to_owned();
            let index = Netlink::index(&device)?;
            let before = netlink.addresses(index, &device).await?;
            if before.iter().any(|a| a.label == config.name)
                || read_config(dir, &config.name)?.is_some()
            {
                return Err(TaskError::Invalid(format!(
                    "the IP configuration {:?} exists; use update_ip to change it",
                    config.name
                )));
            }
            if let Some(e) = taken(&before, &config) {
                return Err(e);
            }
            let mut wanted = before.clone();
            wanted.push(config.addr());
            let change = DeviceChange {
                index,
                device,
                before,
                wanted,
            };
            transact(
                &netlink,
                dir,
                &[change],
                &[(config.name.clone(), Some(config.clone()))],
            )
            .await?;
            Ok(json!({"name": config.name}))
        }
        IpTask::Update(config) => {
            let device = config.device().to_owned();
            let index = Netlink::index(&device)?;
            let before = netlink.addresses(index, &device).await?;
            if current_config(dir, &config.name, &before)?.is_none() {
                return Err(TaskError::Invalid(format!(
                    "there is no IP configuration {:?} to update; use add_ip",
                    config.name
                )));
            }
            if let Some(e) = taken(&before, &config) {
                return Err(e);
            }
            let mut wanted: Vec<Addr> = before
                .iter()
                .filter(|a| a.label != config.name)
                .cloned()
                .collect();
            wanted.push(config.addr());
            let change = DeviceChange {
                index,
                device,
                before,
                wanted,
            };
            transact(
                &netlink,
                dir,
                &[change],
                &[(config.name.clone(), Some(config.clone()))],
            )
            .await?;
            Ok(json!({"name": config.name}))
        }
        IpTask::Delete { name, ip } => {
            let device = device_of(&name).to_owned();
            let index = Netlink::index(&device)?;
            let before = netlink.addresses(index, &device).await?;
            let current = current_config(dir, &name, &before)?.ok_or_else(|| no_config(&name))?;
            if let Some(ip) = ip
                && ip != current.ip
            {
                return Err(TaskError::Invalid(format!(
                    "{name} has the address {}, not {ip}; nothing deleted",
                    current.ip
                )));
            }
            let wanted = before.iter().filter(|a| a.label != name).cloned().collect();
            let change = DeviceChange {
                index,
                device,
                before,
                wanted,
            };
            transact(&netlink, dir, &[change], &[(name.clone(), None)]).await?;
            Ok(json!({"name": name}))
        }
        IpTask::Exchange { name1, name2 } => {
            let mut devices: Vec<DeviceChange> = Vec::new();
            for name in [&name1, &name2] {
                let device = device_of(name).to_owned();
                if devices.iter().all(|d| d.device != device) {
                    let index = Netlink::index(&device)?;
                    let before = netlink.addresses(index, &device).await?;
                    devices.push(DeviceChange {
                        index,
                        device,
                        wanted: before.clone(),
                        before,
                    });
                }
            }
            let addrs_of = |name: &str| {
                devices
                    .iter()
                    .find(|d| d.device == device_of(name))
                    .map(|d| d.before.clone())
                    .unwrap_or_default()
            };
            let first =
                current_config(dir, &name1, &addrs_of(&name1))?.ok_or_else(|| no_config(&name1))?;
            let second =
                current_config(dir, &name2, &addrs_of(&name2))?.ok_or_else(|| no_config(&name2))?;
            let new1 = IpConfig {
                name: name1.clone(),
                ..second
            };
            let new2 = IpConfig {
                name: name2.clone(),
                ..first
            };
            for change in &mut devices {
                change
                    .wanted
                    .retain(|a| a.label != name1 && a.label != name2);
                // A NIC's own address first, so it is its subnet's primary again.
                let mut new: Vec<Addr> = [&new1, &new2]
                    .into_iter()
                    .filter(|c| c.device() == change.device)
                    .map(IpConfig::addr)
                    .collect();
                new.sort_by_key(|a| a.label.contains(':'));
                change.wanted.extend(new);
            }
            transact(
                &netlink,
                dir,
                &devices,
                &[(name1.clone(), Some(new1)), (name2.clone(), Some(new2))],
            )
            .await?;
            Ok(json!({"name1": name2, "name2": name1}))
        }
    }
}

/// Re-adds the labelled addresses (`nic:n`) of the configuration files that are missing from
/// their device, e.g. after a reboot. Returns what was restored and what could not be.
pub async fn restore(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut restored = Vec::new();
    let mut failed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (restored, failed);
    };
    let netlink = match Netlink::connect() {
        Ok(n) => n,
        Err(e) => return (restored, vec![e.to_string()]),
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_prefix("ifcfg-") else {
            continue;
        };
        if !name.contains(':') {
            continue;
        }
        let outcome = async {
            let config = read_config(dir, name)?.ok_or_else(|| TaskError::Failed("gone".into()))?;
            let index = Netlink::index(config.device())?;
            let addrs = netlink.addresses(index, config.device()).await?;
            if addrs.contains(&config.addr()) {
                return Ok(false);
            }
            netlink.add(index, &config.addr()).await.map(|()| true)
        }
        .await;
        match outcome {
            Ok(true) => restored.push(name.to_owned()),
            Ok(false) => {}
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    (restored, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: &str, ip: &str, mask: &str, gw: &str) -> Value {
        json!({"name": name, "ip": ip, "netmask": mask, "gateway": gw, "dns1": "8.8.8.8", "dns2": ""})
    }

    #[test]
    fn seed_body_parses_and_round_trips_through_ifcfg() {
        let task = IpTask::parse(
            "add_ip",
            &json!({
                "name": "eth0:0", "ip": "172.16.1.34", "netmask": "255.255.255.0",
                "gateway": "172.16.1.254", "dns1": "8.8.8.8", "dns2": "114.114.114.114"
            }),
        )
        .unwrap();
        let IpTask::Add(config) = task else { panic!() };
        assert_eq!((config.device(), config.prefix), ("eth0", 24));
        let text = config.to_ifcfg();
        assert!(
            text.contains("DEVICE=eth0:0\n") && text.contains("NETMASK=255.255.255.0\n"),
            "{text}"
        );
        assert_eq!(IpConfig::from_ifcfg(&text).unwrap(), config);
        let quoted = "DEVICE=\"eth1:2\"\nIPADDR='10.1.2.3'\nPREFIX=16\n";
        let c = IpConfig::from_ifcfg(quoted).unwrap();
        assert_eq!(
            (c.ip, c.prefix, c.gateway),
            ("10.1.2.3".parse().unwrap(), 16, None)
        );
    }

    #[test]
    fn bad_addresses_masks_and_gateways_get_30006_long_names_30005() {
        let cases = [
            (body("eth0:0", "300.1.1.1", "255.255.255.0", ""), 30006),
            (body("eth0:0", "10.0.0.5", "255.0.255.0", ""), 30006),
            (body("eth0:0", "10.0.0.5", "0.0.0.0", ""), 30006),
            (
                body("eth0:0", "10.0.0.5", "255.255.255.0", "10.0.1.1"),
                30006,
            ),
            (
                body("eth0:0", "10.0.0.5", "255.255.255.0", "10.0.0.5"),
                30006,
            ),
            (
                body("eth0:0", "10.0.0.5", "255.255.255.0", "10.0.0.255"),
                30006,
            ),
            (body("eth0:0", "10.0.0.0", "255.255.255.0", ""), 30006),
            (body("eth0:0", "224.0.0.1", "255.255.255.0", ""), 30006),
            (body("eth0:0", "010.0.0.5", "255.255.255.0", ""), 30006),
            (body("eth0", "10.0.0.5", "255.255.255.0", ""), 30006),
            (body("eth0:", "10.0.0.5", "255.255.255.0", ""), 30006),
            (body("eth 0:1", "10.0.0.5", "255.255.255.0", ""), 30006),
            (body("a/b:1", "10.0.0.5", "255.255.255.0", ""), 30006),
            (
                body("enp0s31f6abcd:10", "10.0.0.5", "255.255.255.0", ""),
                30005,
            ),
            (json!({"name": "eth0:0", "ip": "10.0.0.5"}), 30006),
            (
                json!({"name": "eth0:0", "ip": 5, "netmask": "255.255.255.0"}),
                30006,
            ),
        ];
        for (b, code) in cases {
            let error = IpTask::parse("add_ip", &b).unwrap_err();
            assert_eq!(error.code(), code, "{b}: {error}");
        }
        assert!(IpTask::parse("update_ip", &body("eth0:0", "10.0.0.5", "24", "10.0.0.1")).is_ok());
        assert!(
            IpTask::parse(
                "add_ip",
                &body("eth0:0", "10.0.0.5", "255.255.255.252", "10.0.0.6")
            )
            .is_ok()
        );
        assert_eq!(
            IpTask::parse("exchange_ip", &json!({"name1": "eth0", "name2": "eth0"}))
                .unwrap_err()
                .code(),
            30006
        );
        assert!(IpTask::parse("exchange_ip", &json!({"name1": "eth0", "name2": "eth0:0"})).is_ok());
        assert_eq!(
            IpTask::parse("delete_ip", &json!({"name": "eth0:0", "ip": "x"}))
                .unwrap_err()
                .code(),
            30006
        );
    }

    #[test]
    fn masks() {
        assert_eq!(parse_mask("255.255.255.0").unwrap(), 24);
        assert_eq!(parse_mask("255.255.255.255").unwrap(), 32);
        assert_eq!(parse_mask("128.0.0.0").unwrap(), 1);
        assert!(parse_mask("255.255.0.255").is_err());
        assert!(parse_mask("33").is_err());
        assert_eq!(mask_of(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask_of(32), Ipv4Addr::new(255, 255, 255, 255));
    }
}
