//! The host as the probes see it: a filesystem root (`/` on a plain host, `/host` in the
//! DaemonSet, a fixture tree in tests) plus the things that are not files — filesystem
//! usage (`statvfs`), interface addresses (netlink via `getifaddrs`) and TCP connections by
//! local port (netlink `NETLINK_SOCK_DIAG`). Seed 002 §二 data is
//! read only through this type, so every probe can be pointed at a fixture.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sock_diag::Established;

/// Capacity of one mounted filesystem, in bytes, as `statvfs` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// `f_blocks * f_frsize`.
    pub total: u64,
    /// `f_bfree * f_frsize`: free including the blocks reserved for root.
    pub free: u64,
    /// `f_bavail * f_frsize`: free for unprivileged users.
    pub available: u64,
}

/// The primary IPv4 address of an interface and its netmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Assignment {
    /// The address.
    pub address: Ipv4Addr,
    /// Its netmask, e.g. 255.255.255.0.
    pub netmask: Ipv4Addr,
}

/// Host facts that come from system calls rather than files.
pub trait HostCalls: Send + Sync + std::fmt::Debug {
    /// Usage of the filesystem mounted at `path` (already prefixed with the host root).
    fn fs_usage(&self, path: &Path) -> io::Result<FsUsage>;
    /// First IPv4 address of each interface of the daemon's network namespace, by name.
    fn ipv4_addresses(&self) -> io::Result<BTreeMap<String, Ipv4Assignment>>;
    /// ESTABLISHED TCP connections (IPv4 and IPv6) of the daemon's network namespace whose
    /// local port is one of `ports`, counted by port. A host without a socket-diagnostics
    /// interface (a fixture) answers [`io::ErrorKind::Unsupported`], and `port_status` reads
    /// `/proc/net/tcp*` under the host root instead.
    fn established_tcp(&self, ports: &[u16]) -> io::Result<Established> {
        let _ = ports;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// The live kernel: `statvfs(2)`, `getifaddrs(3)` (netlink under the hood) and
/// `NETLINK_SOCK_DIAG` ([`crate::sock_diag`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveCalls;

impl HostCalls for LiveCalls {
    fn fs_usage(&self, path: &Path) -> io::Result<FsUsage> {
        let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
        let frsize = st.fragment_size();
        Ok(FsUsage {
            total: st.blocks().saturating_mul(frsize),
            free: st.blocks_free().saturating_mul(frsize),
            available: st.blocks_available().saturating_mul(frsize),
        })
    }

    fn ipv4_addresses(&self) -> io::Result<BTreeMap<String, Ipv4Assignment>> {
        let mut out = BTreeMap::new();
        for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
            let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
                continue;
            };
            let (Some(addr), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
                continue;
            };
            // Aliases carry their label ("eth0:0") as the name; the first address under the
            // plain name is the interface's primary one.
            out.entry(ifa.interface_name)
                .or_insert_with(|| Ipv4Assignment {
                    address: addr.ip(),
                    netmask: mask.ip(),
                });
        }
        Ok(out)
    }

    fn established_tcp(&self, ports: &[u16]) -> io::Result<Established> {
        crate::sock_diag::established_by_local_port(ports)
    }
}

/// Reads a whole file whose size is not known in advance. `/proc` and `/sys` files say they
/// are empty (or one page), so asking for the size (`statx`, `lseek`), as
/// `std::fs::read_to_string` does, is two wasted system calls per file: read page-sized
/// chunks until end of file instead.
fn read_unsized(path: &Path) -> io::Result<String> {
    const CHUNK: usize = 4096;
    let mut file = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    loop {
        let filled = buf.len();
        buf.resize(filled + CHUNK.max(filled), 0);
        match file.read(&mut buf[filled..]) {
            Ok(0) => {
                buf.truncate(filled);
                break;
            }
            Ok(n) => buf.truncate(filled + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(filled),
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The root of the host's filesystem plus the host's system calls.
#[derive(Debug, Clone)]
pub struct HostRoot {
    root: PathBuf,
    calls: Arc<dyn HostCalls>,
}

impl HostRoot {
    /// A host root backed by the live kernel.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_calls(root, Arc::new(LiveCalls))
    }

    /// A host root whose non-file facts come from `calls` (fixtures in tests).
    pub fn with_calls(root: impl Into<PathBuf>, calls: Arc<dyn HostCalls>) -> Self {
        Self {
            root: root.into(),
            calls,
        }
    }

    /// The root directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `host_path("/proc/stat")` is `<root>/proc/stat`.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let rel = host_path.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.root.join(rel)
    }

    /// Reads a host file to a string; the error names the file.
    pub fn read(&self, host_path: impl AsRef<Path>) -> io::Result<String> {
        let path = self.path(host_path);
        read_unsized(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// Reads a one-line host file (sysfs attribute) and trims it; `None` when unreadable.
    pub fn read_attr(&self, host_path: impl AsRef<Path>) -> Option<String> {
        read_unsized(&self.path(host_path))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Names of the entries of a host directory, sorted; empty when it does not exist.
    pub fn list(&self, host_path: impl AsRef<Path>) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(host_path))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Filesystem usage of a host mount point.
    pub fn fs_usage(&self, mount_point: &str) -> io::Result<FsUsage> {
        self.calls.fs_usage(&self.path(mount_point))
    }

    /// Primary IPv4 address per interface.
    pub fn ipv4_addresses(&self) -> io::Result<BTreeMap<String, Ipv4Assignment>> {
        self.calls.ipv4_addresses()
    }

    /// ESTABLISHED TCP connections by local port for `ports`, from the host's system calls
    /// (see [`HostCalls::established_tcp`]).
    pub fn established_tcp(&self, ports: &[u16]) -> io::Result<Established> {
        self.calls.established_tcp(ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_are_prefixed_with_the_root() {
        let host = HostRoot::new("/host");
        assert_eq!(host.path("/proc/stat"), PathBuf::from("/host/proc/stat"));
        assert_eq!(host.path("proc/stat"), PathBuf::from("/host/proc/stat"));
    }

    #[test]
    fn files_of_any_size_read_like_std_does() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 4095, 4096, 4097, 8192, 100_000] {
            let text: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            std::fs::write(dir.path().join("f"), &text).unwrap();
            assert_eq!(read_unsized(&dir.path().join("f")).unwrap(), text, "{len}");
        }
        for proc_file in ["/proc/self/status", "/proc/self/mounts", "/proc/stat"] {
            let ours = read_unsized(Path::new(proc_file)).unwrap();
            assert!(
                ours.ends_with('\n') && ours.len() > 100,
                "{proc_file}: {ours:?}"
            );
        }
        std::fs::write(dir.path().join("bad"), [0xff, 0xfe]).unwrap();
        let host = HostRoot::new(dir.path());
        let err = host.read("/bad").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("bad"), "{err}");
        assert!(
            host.read("/missing")
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }

    #[test]
    fn live_calls_report_loopback_address() {
        let addrs = LiveCalls.ipv4_addresses().unwrap();
        let lo = &addrs["lo"];
        assert_eq!(lo.address, Ipv4Addr::LOCALHOST);
        assert_eq!(lo.netmask, Ipv4Addr::new(255, 0, 0, 0));
    }
}
