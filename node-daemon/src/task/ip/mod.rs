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
//! Order of work, gather → plan → apply: parse and validate everything (`request`: 30006 bad
//! IP / mask / gateway / DNS, 30005 a name longer than 15 bytes, IFNAMSIZ) → read what the task
//! names, the devices' addresses and the configuration files ([`run`]) → decide without I/O
//! (`plan`: 30003 no such device; 30006 exists / does not exist / address taken) → change the
//! addresses → write the files (`transact`). A change is the full wanted address list of the
//! device, converged to (addresses the kernel drops as a side effect, such as secondaries of a
//! deleted subnet primary, are put back); if any step fails, what was done is undone (the
//! pure `plan::rollback` says what) and the answer is 99999 saying so. `ifcfg` owns the
//! file format, `netlink` the kernel's addresses.

mod ifcfg;
mod netlink;
mod plan;
mod request;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

pub use ifcfg::IfcfgError;
pub use request::{IpConfig, IpTask, MAX_NAME};

use netlink::Netlink;
use plan::{Addr, Failed, Plan, Undo};

use super::TaskError;

/// What the host has that a task names: read before planning, and the files' bytes kept for a
/// rollback.
#[derive(Debug, Default)]
struct Gathered {
    /// Index of each named device that exists.
    indices: BTreeMap<String, u32>,
    /// IPv4 addresses of each named device that exists.
    addresses: BTreeMap<String, Vec<Addr>>,
    /// The configuration files found for the named configurations.
    configs: BTreeMap<String, IpConfig>,
    /// Their bytes, to put back.
    backups: BTreeMap<String, Vec<u8>>,
}

impl Gathered {
    fn index(&self, device: &str) -> Result<u32, TaskError> {
        self.indices
            .get(device)
            .copied()
            .ok_or_else(|| plan::no_device(device))
    }
}

/// Reads the devices and configuration files `task` names. A device that does not exist is
/// left out (the plan refuses with 30003); a file that cannot be read or parsed is a 99999.
async fn gather(netlink: &Netlink, dir: &Path, task: &IpTask) -> Result<Gathered, TaskError> {
    let mut host = Gathered::default();
    for device in task.devices() {
        if let Some(index) = Netlink::index(device)? {
            let addresses = netlink.addresses(index, device).await?;
            host.indices.insert(device.to_owned(), index);
            host.addresses.insert(device.to_owned(), addresses);
        }
    }
    for name in task.names() {
        if let Some(file) = ifcfg::read(dir, name)? {
            host.configs.insert(name.to_owned(), file.config);
            host.backups.insert(name.to_owned(), file.bytes);
        }
    }
    Ok(host)
}

/// Runs an IP task (the caller serializes IP tasks).
pub async fn run(dir: &Path, task: IpTask) -> Result<Value, TaskError> {
    let netlink = Netlink::connect()?;
    let host = gather(&netlink, dir, &task).await?;
    let plan = plan::plan(&task, &host.addresses, &host.configs)?;
    transact(&netlink, dir, &host, &plan).await?;
    Ok(plan.answer)
}

/// Makes the plan's changes, devices first, then files; stops at the first step that fails.
async fn apply(
    netlink: &Netlink,
    dir: &Path,
    host: &Gathered,
    plan: &Plan,
) -> Result<(), (Failed, TaskError)> {
    for (i, change) in plan.devices.iter().enumerate() {
        let converged = match host.index(&change.device) {
            Ok(index) => {
                netlink
                    .converge(index, &change.device, &change.wanted)
                    .await
            }
            Err(e) => Err(e),
        };
        converged.map_err(|e| (Failed::Device(i), e))?;
    }
    for (i, file) in plan.files.iter().enumerate() {
        ifcfg::write(dir, &file.name, file.config.as_ref()).map_err(|e| {
            let path = ifcfg::path(dir, &file.name);
            (
                Failed::File(i),
                TaskError::Failed(format!("cannot write {}: {e}", path.display())),
            )
        })?;
    }
    Ok(())
}

/// Applies the plan; if a step fails, undoes the steps done (files back to their bytes,
/// addresses back to what they were) and answers 99999 saying whether that worked.
async fn transact(
    netlink: &Netlink,
    dir: &Path,
    host: &Gathered,
    plan: &Plan,
) -> Result<(), TaskError> {
    let Err((failed, error)) = apply(netlink, dir, host, plan).await else {
        return Ok(());
    };
    let mut problems = Vec::new();
    for undo in plan::rollback(plan, failed) {
        let undone = match &undo {
            Undo::File(name) => {
                let bytes = host.backups.get(name).map(Vec::as_slice);
                ifcfg::put_back(dir, name, bytes)
                    .map_err(|e| format!("{}: {e}", ifcfg::path(dir, name).display()))
            }
            Undo::Device { device, addresses } => match host.index(device) {
                Ok(index) => netlink.converge(index, device, addresses).await,
                Err(e) => Err(e),
            }
            .map_err(|e| e.to_string()),
        };
        if let Err(problem) = undone {
            problems.push(problem);
        }
    }
    let answer = plan::rolled_back(&error, &problems);
    if problems.is_empty() {
        tracing::warn!(message = %error.detail(), "IP task failed half-way; rolled back");
    } else {
        tracing::error!(message = %error.detail(), problems = %problems.join("; "), "IP task failed and its rollback is incomplete");
    }
    Err(answer)
}

/// Re-adds the labelled addresses (`nic:n`) of the configuration files that are missing from
/// their device, e.g. after a reboot. Returns what was restored and what could not be.
pub async fn restore(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut restored = Vec::new();
    let mut failed = Vec::new();
    let Ok(names) = ifcfg::names(dir) else {
        return (restored, failed);
    };
    let netlink = match Netlink::connect() {
        Ok(n) => n,
        Err(e) => return (restored, vec![e.to_string()]),
    };
    for name in names.iter().filter(|n| request::is_label(n)) {
        let outcome = async {
            let config = ifcfg::read(dir, name)?
                .ok_or_else(|| TaskError::Failed("gone".into()))?
                .config;
            let device = config.device();
            let index = Netlink::index(device)?.ok_or_else(|| plan::no_device(device))?;
            let addrs = netlink.addresses(index, device).await?;
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
