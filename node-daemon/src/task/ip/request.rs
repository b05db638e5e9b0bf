//! The IP task requests (seed 002 §二.12–15 bodies) parsed and validated into [`IpTask`]:
//! names (30006 malformed, 30005 longer than IFNAMSIZ), addresses, netmasks, gateways and DNS
//! servers (30006). Parsing never touches the host.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::task::{HandlerRequest, TaskError, TaskSettings, clip};

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

    /// The configurations the task reads or changes, in the order it names them.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Self::Add(c) | Self::Update(c) => vec![c.name.as_str()],
            Self::Delete { name, .. } => vec![name.as_str()],
            Self::Exchange { name1, name2 } => vec![name1.as_str(), name2.as_str()],
        }
    }

    /// The NICs of [`Self::names`], each once, in the same order.
    pub fn devices(&self) -> Vec<&str> {
        let mut devices: Vec<&str> = Vec::new();
        for name in self.names() {
            let device = device_of(name);
            if !devices.contains(&device) {
                devices.push(device);
            }
        }
        devices
    }
}

impl HandlerRequest for IpTask {
    /// `NetworkHandler`, the name a NodeTask gives these endpoints.
    fn handler(&self) -> &'static str {
        "NetworkHandler"
    }

    /// The endpoint name.
    fn command(&self) -> &'static str {
        match self {
            Self::Add(_) => "add_ip",
            Self::Update(_) => "update_ip",
            Self::Delete { .. } => "delete_ip",
            Self::Exchange { .. } => "exchange_ip",
        }
    }

    fn audit_data(&self) -> Value {
        match self {
            Self::Add(c) | Self::Update(c) => c.to_seed(),
            Self::Delete { name, ip } => json!({"name": name, "ip": ip.map(|i| i.to_string())}),
            Self::Exchange { name1, name2 } => json!({"name1": name1, "name2": name2}),
        }
    }

    fn permission(&self, settings: &TaskSettings) -> Result<(), TaskError> {
        if settings.ip_config_dir.is_none() {
            return Err(TaskError::Refused(format!(
                "{} changes the node's addresses; it needs --ip-config-dir (OPSPLANE_IP_CONFIG_DIR), where the configurations are kept",
                self.command()
            )));
        }
        Ok(())
    }
}

fn string<'a>(body: &'a Value, name: &str) -> Result<&'a str, TaskError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(TaskError::Invalid(format!("{name} must be a string"))),
        None => Err(TaskError::Invalid(format!("{name} is required"))),
    }
}

/// The NIC of a configuration name (`eth0` of `eth0:0` and of `eth0`).
pub(super) fn device_of(name: &str) -> &str {
    name.split_once(':').map(|(d, _)| d).unwrap_or(name)
}

/// Whether a configuration name is a labelled address (`eth0:0`) rather than the NIC's own
/// address (`eth0`).
pub(super) fn is_label(name: &str) -> bool {
    device_of(name) != name
}

/// Checks a configuration name: `nic:label` (or `nic` when `alias_required` is false).
pub(super) fn check_name(name: &str, alias_required: bool) -> Result<(), TaskError> {
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

pub(super) fn parse_ip(text: &str, field: &str) -> Result<Ipv4Addr, TaskError> {
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

pub(super) fn parse_opt(text: &str, field: &str) -> Result<Option<Ipv4Addr>, TaskError> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        parse_ip(text, field).map(Some)
    }
}

/// A dotted netmask with contiguous ones (or a prefix length 1–32) → prefix length.
pub(super) fn parse_mask(text: &str) -> Result<u8, TaskError> {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn body(name: &str, ip: &str, mask: &str, gw: &str) -> Value {
        json!({"name": name, "ip": ip, "netmask": mask, "gateway": gw, "dns1": "8.8.8.8", "dns2": ""})
    }

    /// The seed's add_ip example (§二.12), parsed.
    pub(in crate::task::ip) fn seed_add_ip() -> (IpTask, IpConfig) {
        let task = IpTask::parse(
            "add_ip",
            &json!({
                "name": "eth0:0", "ip": "172.16.1.34", "netmask": "255.255.255.0",
                "gateway": "172.16.1.254", "dns1": "8.8.8.8", "dns2": "114.114.114.114"
            }),
        )
        .unwrap();
        let IpTask::Add(config) = &task else {
            panic!("{task:?}")
        };
        let config = config.clone();
        (task, config)
    }

    #[test]
    fn the_seed_body_parses_into_a_configuration() {
        let (task, config) = seed_add_ip();
        assert_eq!((config.device(), config.prefix), ("eth0", 24));
        assert_eq!(config.gateway, Some(Ipv4Addr::new(172, 16, 1, 254)));
        assert_eq!(config.to_seed()["netmask"], "255.255.255.0");
        assert_eq!(task.names(), ["eth0:0"]);
        assert_eq!(task.devices(), ["eth0"]);
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
        assert_eq!(
            IpTask::parse("rename_ip", &json!({})).unwrap_err().code(),
            30004
        );
    }

    #[test]
    fn an_exchange_names_both_configurations_and_each_device_once() {
        let same =
            IpTask::parse("exchange_ip", &json!({"name1": "eth0", "name2": "eth0:0"})).unwrap();
        assert_eq!(same.names(), ["eth0", "eth0:0"]);
        assert_eq!(same.devices(), ["eth0"]);
        let two = IpTask::parse(
            "exchange_ip",
            &json!({"name1": "eth1:2", "name2": "eth0:0"}),
        )
        .unwrap();
        assert_eq!(two.devices(), ["eth1", "eth0"]);
        assert!(is_label("eth0:0") && !is_label("eth0"));
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
