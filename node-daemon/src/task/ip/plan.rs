//! The decisions of the IP tasks, without I/O: [`plan`] turns a request and what the host has
//! (the addresses of the devices it names, the configuration files of the names) into the
//! changes to make, or the seed error that refuses it; [`rollback`] says what to undo when
//! applying a plan fails at a given step, and [`rolled_back`] how the failure is answered.
//!
//! A device change is the full wanted address list of the device, converged to, so addresses
//! the kernel drops as a side effect come back; the files are written after every device took
//! its addresses.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::request::{IpConfig, IpTask, device_of, is_label};
use crate::task::TaskError;

/// An IPv4 address on a device as netlink sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// The address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Its label (`eth0:0`; the device's name for the NIC's own address).
    pub label: String,
}

impl IpConfig {
    /// The address the configuration puts on its device.
    pub fn addr(&self) -> Addr {
        Addr {
            ip: self.ip,
            prefix: self.prefix,
            label: self.name.clone(),
        }
    }
}

/// One device's part of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChange {
    /// The NIC.
    pub device: String,
    /// Its addresses now (what a rollback converges back to).
    pub before: Vec<Addr>,
    /// The addresses it must have.
    pub wanted: Vec<Addr>,
}

/// One configuration file of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The configuration's name.
    pub name: String,
    /// What the file must say; `None`: remove it.
    pub config: Option<IpConfig>,
}

/// The changes of one task, in the order they are made: every device, then every file.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The devices, in the order the request names them.
    pub devices: Vec<DeviceChange>,
    /// The files, in the order the request names them.
    pub files: Vec<FileChange>,
    /// The seed answer's `data` once the changes are made.
    pub answer: Value,
}

/// Plans `task` against the host: `addresses` holds the IPv4 addresses of each device the task
/// names that exists (a device missing from it does not exist: 30003), `files` the
/// configuration files found for the names the task names. Refusals are 30006 and say why.
pub fn plan(
    task: &IpTask,
    addresses: &BTreeMap<String, Vec<Addr>>,
    files: &BTreeMap<String, IpConfig>,
) -> Result<Plan, TaskError> {
    match task {
        IpTask::Add(config) => put(config, Put::Create, addresses, files),
        IpTask::Update(config) => put(config, Put::Replace, addresses, files),
        IpTask::Delete { name, ip } => delete(name, *ip, addresses, files),
        IpTask::Exchange { name1, name2 } => exchange(name1, name2, addresses, files),
    }
}

/// The error of a device that does not exist.
pub fn no_device(device: &str) -> TaskError {
    TaskError::DeviceNotFound(format!(
        "there is no network device {device:?} on this node"
    ))
}

/// What add_ip and update_ip expect of the configuration they write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Put {
    /// add_ip: it must not exist yet.
    Create,
    /// update_ip: it must exist.
    Replace,
}

fn on_device<'a>(
    addresses: &'a BTreeMap<String, Vec<Addr>>,
    device: &str,
) -> Result<&'a [Addr], TaskError> {
    addresses
        .get(device)
        .map(Vec::as_slice)
        .ok_or_else(|| no_device(device))
}

/// A configuration as it stands: the file when there is one (gateway, DNS), with the address
/// the device really has under that label; else the device's address alone.
fn current(name: &str, files: &BTreeMap<String, IpConfig>, addrs: &[Addr]) -> Option<IpConfig> {
    let live = addrs.iter().find(|a| a.label == name);
    match (files.get(name).cloned(), live) {
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
    }
}

fn no_config(name: &str) -> TaskError {
    TaskError::Invalid(format!(
        "there is no IP configuration {name:?} on this node (neither an address labelled so nor a file)"
    ))
}

/// The device's addresses without those labelled with one of `names`.
fn without(addrs: &[Addr], names: &[&str]) -> Vec<Addr> {
    addrs
        .iter()
        .filter(|a| !names.contains(&a.label.as_str()))
        .cloned()
        .collect()
}

/// add_ip and update_ip: the configuration's address replaces whatever its label had.
fn put(
    config: &IpConfig,
    put: Put,
    addresses: &BTreeMap<String, Vec<Addr>>,
    files: &BTreeMap<String, IpConfig>,
) -> Result<Plan, TaskError> {
    let before = on_device(addresses, config.device())?;
    let exists = current(&config.name, files, before).is_some();
    match (put, exists) {
        (Put::Create, true) => {
            return Err(TaskError::Invalid(format!(
                "the IP configuration {:?} exists; use update_ip to change it",
                config.name
            )));
        }
        (Put::Replace, false) => {
            return Err(TaskError::Invalid(format!(
                "there is no IP configuration {:?} to update; use add_ip",
                config.name
            )));
        }
        _ => {}
    }
    if let Some(a) = before
        .iter()
        .find(|a| a.label != config.name && a.ip == config.ip && a.prefix == config.prefix)
    {
        return Err(TaskError::Invalid(format!(
            "{}/{} is already on {} as {}",
            config.ip,
            config.prefix,
            config.device(),
            a.label
        )));
    }
    let mut wanted = without(before, &[&config.name]);
    wanted.push(config.addr());
    Ok(Plan {
        devices: vec![DeviceChange {
            device: config.device().to_owned(),
            before: before.to_vec(),
            wanted,
        }],
        files: vec![FileChange {
            name: config.name.clone(),
            config: Some(config.clone()),
        }],
        answer: json!({"name": config.name}),
    })
}

/// delete_ip: the label's address and the file go; `ip`, when given, must be the address.
fn delete(
    name: &str,
    ip: Option<Ipv4Addr>,
    addresses: &BTreeMap<String, Vec<Addr>>,
    files: &BTreeMap<String, IpConfig>,
) -> Result<Plan, TaskError> {
    let device = device_of(name);
    let before = on_device(addresses, device)?;
    let current = current(name, files, before).ok_or_else(|| no_config(name))?;
    if let Some(ip) = ip
        && ip != current.ip
    {
        return Err(TaskError::Invalid(format!(
            "{name} has the address {}, not {ip}; nothing deleted",
            current.ip
        )));
    }
    Ok(Plan {
        devices: vec![DeviceChange {
            device: device.to_owned(),
            before: before.to_vec(),
            wanted: without(before, &[name]),
        }],
        files: vec![FileChange {
            name: name.to_owned(),
            config: None,
        }],
        answer: json!({"name": name}),
    })
}

/// exchange_ip: each configuration takes the other's address, mask, gateway and DNS.
fn exchange(
    name1: &str,
    name2: &str,
    addresses: &BTreeMap<String, Vec<Addr>>,
    files: &BTreeMap<String, IpConfig>,
) -> Result<Plan, TaskError> {
    let mut devices: Vec<DeviceChange> = Vec::new();
    for name in [name1, name2] {
        let device = device_of(name);
        let before = on_device(addresses, device)?;
        if devices.iter().all(|d| d.device != device) {
            devices.push(DeviceChange {
                device: device.to_owned(),
                before: before.to_vec(),
                wanted: without(before, &[name1, name2]),
            });
        }
    }
    let first = current(name1, files, on_device(addresses, device_of(name1))?)
        .ok_or_else(|| no_config(name1))?;
    let second = current(name2, files, on_device(addresses, device_of(name2))?)
        .ok_or_else(|| no_config(name2))?;
    let new1 = IpConfig {
        name: name1.to_owned(),
        ..second
    };
    let new2 = IpConfig {
        name: name2.to_owned(),
        ..first
    };
    for change in &mut devices {
        let mut new: Vec<Addr> = [&new1, &new2]
            .into_iter()
            .filter(|c| c.device() == change.device)
            .map(IpConfig::addr)
            .collect();
        // A NIC's own address first, so it is its subnet's primary again.
        new.sort_by_key(|a| is_label(&a.label));
        change.wanted.extend(new);
    }
    Ok(Plan {
        devices,
        files: vec![
            FileChange {
                name: name1.to_owned(),
                config: Some(new1),
            },
            FileChange {
                name: name2.to_owned(),
                config: Some(new2),
            },
        ],
        answer: json!({"name1": name2, "name2": name1}),
    })
}

/// The step of a plan that failed; the steps before it were done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Converging `devices[i]` failed (it may be half changed).
    Device(usize),
    /// Writing `files[i]` failed (a failed write leaves the file as it was); every device had
    /// taken its addresses.
    File(usize),
}

/// One step of a rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Put the configuration's file back as it was before the task (remove it if there was none).
    File(String),
    /// Converge the device back to the addresses it had before the task.
    Device {
        /// The NIC.
        device: String,
        /// Its addresses before.
        addresses: Vec<Addr>,
    },
}

/// What to undo after `failed`: the files written before it, newest first, then every device
/// touched so far (the failing one included, as it may be half changed), newest first.
/// Devices and files the plan had not reached are left alone.
pub fn rollback(plan: &Plan, failed: Failed) -> Vec<Undo> {
    let (devices, files) = match failed {
        Failed::Device(i) => (i + 1, 0),
        Failed::File(i) => (plan.devices.len(), i),
    };
    let files = plan
        .files
        .iter()
        .take(files)
        .rev()
        .map(|f| Undo::File(f.name.clone()));
    let devices = plan
        .devices
        .iter()
        .take(devices)
        .rev()
        .map(|d| Undo::Device {
            device: d.device.clone(),
            addresses: d.before.clone(),
        });
    files.chain(devices).collect()
}

/// The answer to a task that failed half-way: 99999 with what failed and whether every change
/// was undone (`problems`: the undo steps that failed).
pub fn rolled_back(error: &TaskError, problems: &[String]) -> TaskError {
    let message = error.detail();
    if problems.is_empty() {
        TaskError::Failed(format!("{message}; every change was rolled back"))
    } else {
        TaskError::Failed(format!(
            "{message}; rolling back failed too: {}",
            problems.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ip: &str, label: &str) -> Addr {
        let (ip, prefix) = ip.split_once('/').unwrap();
        Addr {
            ip: ip.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
            label: label.into(),
        }
    }

    fn config(name: &str, ip: &str, gateway: Option<&str>) -> IpConfig {
        IpConfig {
            name: name.into(),
            ip: ip.parse().unwrap(),
            prefix: 24,
            gateway: gateway.map(|g| g.parse().unwrap()),
            dns1: Some("8.8.8.8".parse().unwrap()),
            dns2: None,
        }
    }

    /// eth0 with its own address .2 and eth0:0 = .3 (with a file); eth1 with .2 and
    /// eth1:5 = .5 (no file).
    fn host() -> (BTreeMap<String, Vec<Addr>>, BTreeMap<String, IpConfig>) {
        let addresses = BTreeMap::from([
            (
                "eth0".to_string(),
                vec![a("10.0.0.2/24", "eth0"), a("10.0.0.3/24", "eth0:0")],
            ),
            (
                "eth1".to_string(),
                vec![a("10.1.0.2/24", "eth1"), a("10.1.0.5/24", "eth1:5")],
            ),
        ]);
        let files = BTreeMap::from([(
            "eth0:0".to_string(),
            config("eth0:0", "10.0.0.3", Some("10.0.0.1")),
        )]);
        (addresses, files)
    }

    fn task(command: &str, body: Value) -> IpTask {
        IpTask::parse(command, &body).unwrap()
    }

    fn body(name: &str, ip: &str) -> Value {
        json!({"name": name, "ip": ip, "netmask": "255.255.255.0", "gateway": "10.0.0.1", "dns1": "8.8.8.8"})
    }

    fn planned(t: &IpTask) -> Plan {
        let (addresses, files) = host();
        plan(t, &addresses, &files).unwrap()
    }

    fn refused(t: &IpTask) -> TaskError {
        let (addresses, files) = host();
        plan(t, &addresses, &files).unwrap_err()
    }

    #[test]
    fn add_appends_the_new_address_and_writes_its_file() {
        let t = task("add_ip", body("eth0:1", "10.0.0.4"));
        let p = planned(&t);
        assert_eq!(
            p.devices,
            [DeviceChange {
                device: "eth0".into(),
                before: host().0["eth0"].clone(),
                wanted: vec![
                    a("10.0.0.2/24", "eth0"),
                    a("10.0.0.3/24", "eth0:0"),
                    a("10.0.0.4/24", "eth0:1"),
                ],
            }]
        );
        let IpTask::Add(c) = &t else { panic!() };
        assert_eq!(
            p.files,
            [FileChange {
                name: "eth0:1".into(),
                config: Some(c.clone()),
            }]
        );
        assert_eq!(p.answer, json!({"name": "eth0:1"}));
    }

    #[test]
    fn add_refuses_a_configuration_that_exists_as_an_address_or_as_a_file() {
        let (mut addresses, mut files) = host();
        // Live address only (eth1:5), file only (eth0:7), both (eth0:0).
        files.insert("eth0:7".into(), config("eth0:7", "10.0.0.7", None));
        for (name, ip) in [
            ("eth1:5", "10.1.0.9"),
            ("eth0:7", "10.0.0.9"),
            ("eth0:0", "10.0.0.9"),
        ] {
            let mut b = body(name, ip);
            b["gateway"] = json!("");
            let error = plan(&task("add_ip", b), &addresses, &files).unwrap_err();
            assert_eq!(error.code(), 30006, "{name}: {error}");
            assert!(
                error.to_string().contains("exists; use update_ip"),
                "{error}"
            );
        }
        addresses.remove("eth1");
        files.clear();
        assert!(
            plan(
                &task("add_ip", body("eth0:1", "10.0.0.4")),
                &addresses,
                &files
            )
            .is_ok()
        );
    }

    #[test]
    fn add_and_update_refuse_an_address_another_label_has() {
        for command in ["add_ip", "update_ip"] {
            let name = if command == "add_ip" {
                "eth0:1"
            } else {
                "eth0:0"
            };
            let error = refused(&task(command, body(name, "10.0.0.2")));
            assert_eq!(error.code(), 30006, "{command}");
            assert!(
                error
                    .to_string()
                    .contains("10.0.0.2/24 is already on eth0 as eth0"),
                "{command}: {error}"
            );
        }
        // The same address on another prefix is another address.
        let mut b = body("eth0:1", "10.0.0.3");
        b["netmask"] = json!("255.255.0.0");
        b["gateway"] = json!("");
        assert!(planned(&task("add_ip", b)).devices[0].wanted.len() == 3);
    }

    #[test]
    fn update_moves_the_label_to_its_new_address_and_keeps_the_others() {
        let t = task("update_ip", body("eth0:0", "10.0.0.9"));
        let p = planned(&t);
        assert_eq!(
            p.devices[0].wanted,
            [a("10.0.0.2/24", "eth0"), a("10.0.0.9/24", "eth0:0")]
        );
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.answer, json!({"name": "eth0:0"}));
        // Keeping its own address is no conflict.
        let same = planned(&task("update_ip", body("eth0:0", "10.0.0.3")));
        assert_eq!(same.devices[0].wanted, host().0["eth0"]);
        // A configuration whose address was lost (file only) gets it back.
        let (addresses, mut files) = host();
        files.insert("eth0:7".into(), config("eth0:7", "10.0.0.7", None));
        let p = plan(
            &task("update_ip", body("eth0:7", "10.0.0.8")),
            &addresses,
            &files,
        )
        .unwrap();
        assert_eq!(
            p.devices[0].wanted.last(),
            Some(&a("10.0.0.8/24", "eth0:7"))
        );
    }

    #[test]
    fn update_refuses_an_unknown_configuration() {
        let error = refused(&task("update_ip", body("eth0:5", "10.0.0.4")));
        assert_eq!(error.code(), 30006);
        assert!(error.to_string().contains("use add_ip"), "{error}");
    }

    #[test]
    fn every_command_on_a_missing_device_is_30003_naming_it() {
        let tasks = [
            task("add_ip", body("eth9:0", "10.0.0.4")),
            task("update_ip", body("eth9:0", "10.0.0.4")),
            task("delete_ip", json!({"name": "eth9:0"})),
            task("exchange_ip", json!({"name1": "eth9", "name2": "eth0:0"})),
            task("exchange_ip", json!({"name1": "eth0:0", "name2": "eth9:1"})),
        ];
        for t in tasks {
            let error = refused(&t);
            assert_eq!(error.code(), 30003, "{t:?}: {error}");
            assert!(
                error.to_string().contains("no network device \"eth9\""),
                "{error}"
            );
        }
    }

    #[test]
    fn delete_removes_the_labels_address_and_its_file() {
        for ip in [None, Some("10.0.0.3")] {
            let mut b = json!({"name": "eth0:0"});
            if let Some(ip) = ip {
                b["ip"] = json!(ip);
            }
            let p = planned(&task("delete_ip", b));
            assert_eq!(p.devices[0].wanted, [a("10.0.0.2/24", "eth0")]);
            assert_eq!(
                p.files,
                [FileChange {
                    name: "eth0:0".into(),
                    config: None,
                }]
            );
            assert_eq!(p.answer, json!({"name": "eth0:0"}));
        }
        // Only an address (no file), only a file (no address): both are configurations.
        let p = planned(&task("delete_ip", json!({"name": "eth1:5"})));
        assert_eq!(p.devices[0].wanted, [a("10.1.0.2/24", "eth1")]);
        let (addresses, mut files) = host();
        files.insert("eth1:7".into(), config("eth1:7", "10.1.0.7", None));
        let p = plan(
            &task("delete_ip", json!({"name": "eth1:7", "ip": "10.1.0.7"})),
            &addresses,
            &files,
        )
        .unwrap();
        assert_eq!(p.devices[0].wanted, addresses["eth1"]);
        assert_eq!(p.files[0].config, None);
    }

    #[test]
    fn delete_refuses_another_address_and_an_unknown_configuration() {
        let error = refused(&task(
            "delete_ip",
            json!({"name": "eth0:0", "ip": "10.0.0.9"}),
        ));
        assert_eq!(error.code(), 30006);
        assert!(
            error
                .to_string()
                .contains("has the address 10.0.0.3, not 10.0.0.9; nothing deleted"),
            "{error}"
        );
        let error = refused(&task("delete_ip", json!({"name": "eth0:7"})));
        assert_eq!(error.code(), 30006);
        assert!(error.to_string().contains("no IP configuration"), "{error}");
    }

    #[test]
    fn exchange_swaps_the_nics_own_address_with_a_label_and_puts_the_nics_own_first() {
        let p = planned(&task(
            "exchange_ip",
            json!({"name1": "eth0", "name2": "eth0:0"}),
        ));
        assert_eq!(p.devices.len(), 1);
        assert_eq!(
            p.devices[0].wanted,
            [a("10.0.0.3/24", "eth0"), a("10.0.0.2/24", "eth0:0")]
        );
        // eth0 takes eth0:0's file (gateway, DNS); eth0:0 takes what eth0 had: its address
        // alone, as eth0 has no file.
        let [first, second] = &p.files[..] else {
            panic!("{:?}", p.files)
        };
        assert_eq!(first.name, "eth0");
        assert_eq!(
            first.config,
            Some(config("eth0", "10.0.0.3", Some("10.0.0.1")))
        );
        assert_eq!(second.name, "eth0:0");
        let c = second.config.as_ref().unwrap();
        assert_eq!(
            (c.ip, c.gateway, c.dns1),
            ("10.0.0.2".parse().unwrap(), None, None)
        );
        assert_eq!(p.answer, json!({"name1": "eth0:0", "name2": "eth0"}));
    }

    #[test]
    fn exchange_takes_the_live_address_over_the_files_and_works_across_devices() {
        let (mut addresses, files) = host();
        // The file of eth0:0 says .3 but the device has .4 under that label.
        addresses.insert(
            "eth0".into(),
            vec![a("10.0.0.2/24", "eth0"), a("10.0.0.4/24", "eth0:0")],
        );
        let p = plan(
            &task("exchange_ip", json!({"name1": "eth0:0", "name2": "eth1:5"})),
            &addresses,
            &files,
        )
        .unwrap();
        let devices: Vec<(&str, &[Addr])> = p
            .devices
            .iter()
            .map(|d| (d.device.as_str(), d.wanted.as_slice()))
            .collect();
        assert_eq!(
            devices,
            [
                (
                    "eth0",
                    &[a("10.0.0.2/24", "eth0"), a("10.1.0.5/24", "eth0:0")][..]
                ),
                (
                    "eth1",
                    &[a("10.1.0.2/24", "eth1"), a("10.0.0.4/24", "eth1:5")][..]
                ),
            ]
        );
        let new2 = p.files[1].config.as_ref().unwrap();
        assert_eq!(
            (new2.ip, new2.gateway),
            (
                "10.0.0.4".parse().unwrap(),
                Some("10.0.0.1".parse().unwrap())
            )
        );
    }

    #[test]
    fn exchange_refuses_an_unknown_configuration_on_either_side() {
        for b in [
            json!({"name1": "eth0", "name2": "eth0:7"}),
            json!({"name1": "eth0:7", "name2": "eth0"}),
        ] {
            let error = refused(&task("exchange_ip", b.clone()));
            assert_eq!(error.code(), 30006, "{b}");
            assert!(error.to_string().contains("\"eth0:7\""), "{error}");
        }
    }

    /// The bad requests of tests/ip_netns.rs, planned without a namespace: same codes.
    #[test]
    fn the_seed_codes_of_bad_requests_come_from_parsing_or_planning() {
        let (addresses, files) = host();
        let cases = [
            ("add_ip", body("eth0:0", "10.0.0.4"), 30006),
            ("add_ip", body("eth0:1", "10.0.0.3"), 30006),
            ("add_ip", body("eth9:0", "10.0.0.4"), 30003),
            ("add_ip", body("eth0:0123456789ab", "10.0.0.4"), 30005),
            ("add_ip", body("eth0:1", "10.0.0.300"), 30006),
            ("update_ip", body("eth0:5", "10.0.0.4"), 30006),
            (
                "delete_ip",
                json!({"name": "eth0:0", "ip": "10.0.0.9"}),
                30006,
            ),
            ("delete_ip", json!({"name": "eth0:7"}), 30006),
            (
                "exchange_ip",
                json!({"name1": "eth0", "name2": "eth0:7"}),
                30006,
            ),
            ("rename_ip", json!({}), 30004),
        ];
        for (command, b, code) in cases {
            let error = IpTask::parse(command, &b)
                .and_then(|t| plan(&t, &addresses, &files))
                .unwrap_err();
            assert_eq!(error.code(), code, "{command} {b}: {error}");
        }
    }

    fn two_device_exchange() -> Plan {
        planned(&task(
            "exchange_ip",
            json!({"name1": "eth0:0", "name2": "eth1:5"}),
        ))
    }

    fn device_back(p: &Plan, i: usize) -> Undo {
        Undo::Device {
            device: p.devices[i].device.clone(),
            addresses: p.devices[i].before.clone(),
        }
    }

    #[test]
    fn a_failing_device_is_undone_with_the_devices_before_it_and_nothing_after() {
        let p = two_device_exchange();
        assert_eq!(rollback(&p, Failed::Device(0)), [device_back(&p, 0)]);
        assert_eq!(
            rollback(&p, Failed::Device(1)),
            [device_back(&p, 1), device_back(&p, 0)]
        );
    }

    #[test]
    fn a_failing_file_undoes_the_files_written_before_it_then_every_device() {
        let p = two_device_exchange();
        // The first file failed: it is unchanged, nothing written yet.
        assert_eq!(
            rollback(&p, Failed::File(0)),
            [device_back(&p, 1), device_back(&p, 0)]
        );
        // The second failed: the first is put back, then the addresses.
        assert_eq!(
            rollback(&p, Failed::File(1)),
            [
                Undo::File("eth0:0".into()),
                device_back(&p, 1),
                device_back(&p, 0)
            ]
        );
        // update_ip: one device, one file.
        let p = planned(&task("update_ip", body("eth0:0", "10.0.0.9")));
        assert_eq!(
            rollback(&p, Failed::File(0)),
            [Undo::Device {
                device: "eth0".into(),
                addresses: host().0["eth0"].clone()
            }]
        );
    }

    #[test]
    fn a_rollback_answers_99999_and_says_whether_it_was_complete() {
        let cause = TaskError::Failed("cannot write /x/ifcfg-eth0:0: Is a directory".into());
        let done = rolled_back(&cause, &[]);
        assert_eq!(done.code(), 99999);
        assert_eq!(
            done.detail(),
            "cannot write /x/ifcfg-eth0:0: Is a directory; every change was rolled back"
        );
        let partial = rolled_back(&cause, &["eth0 did not take the wanted addresses".into()]);
        assert_eq!(partial.code(), 99999);
        assert!(
            partial
                .detail()
                .ends_with("; rolling back failed too: eth0 did not take the wanted addresses"),
            "{partial}"
        );
    }
}
