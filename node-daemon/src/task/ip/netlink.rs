//! The rtnetlink client of the IP tasks: a device's index and IPv4 addresses, RTM_NEWADDR /
//! RTM_DELADDR with IFA_LABEL, and [`Netlink::converge`], which makes a device's addresses a
//! wanted list. It works in the daemon's network namespace (`hostNetwork` in the DaemonSet).

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};

use super::plan::Addr;
use crate::task::TaskError;

/// A netlink connection; its background task ends when the value is dropped.
pub struct Netlink {
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn failure(what: &str, error: &rtnetlink::Error) -> TaskError {
    TaskError::Failed(format!("{what}: {error}"))
}

impl Netlink {
    /// Opens a netlink socket.
    pub fn connect() -> Result<Self, TaskError> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| TaskError::Failed(format!("cannot open a netlink socket: {e}")))?;
        Ok(Self {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// The index of a device; `None` when there is no such device.
    pub fn index(device: &str) -> Result<Option<u32>, TaskError> {
        match nix::net::if_::if_nametoindex(device) {
            Ok(index) => Ok(Some(index)),
            Err(nix::errno::Errno::ENODEV) => Ok(None),
            Err(other) => Err(TaskError::Failed(format!(
                "cannot look up {device:?}: {other}"
            ))),
        }
    }

    /// The device's IPv4 addresses in the kernel's order (a subnet's primary before its
    /// secondaries); an address without a label carries the device's name.
    pub async fn addresses(&self, index: u32, device: &str) -> Result<Vec<Addr>, TaskError> {
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
            .map_err(|e| failure("cannot list addresses", &e))?
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

    /// Adds an address with its label.
    pub async fn add(&self, index: u32, addr: &Addr) -> Result<(), TaskError> {
        let mut request = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr.ip), addr.prefix);
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Label(addr.label.clone()));
        request.execute().await.map_err(|e| {
            failure(
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
            Err(e) => Err(failure(
                &format!("cannot delete {}/{} ({})", addr.ip, addr.prefix, addr.label),
                &e,
            )),
        }
    }

    /// Makes the device's IPv4 addresses exactly `wanted` (order: as listed, so a NIC's own
    /// address goes first and becomes its subnet's primary). Addresses the kernel drops as a
    /// side effect, such as the secondaries of a deleted subnet primary, are put back.
    pub async fn converge(
        &self,
        index: u32,
        device: &str,
        wanted: &[Addr],
    ) -> Result<(), TaskError> {
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
