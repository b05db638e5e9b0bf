//! The configuration files: one ifcfg-style file `<--ip-config-dir>/ifcfg-<name>` per
//! configuration, with the keys of RHEL/CentOS network-scripts (the seed's platform), read and
//! written whole (a temporary file renamed over the old one).

use std::path::{Path, PathBuf};

use super::request::{IpConfig, check_name, parse_ip, parse_mask, parse_opt};
use crate::task::TaskError;

/// Why a configuration file's text is not a configuration.
#[derive(Debug, thiserror::Error)]
pub enum IfcfgError {
    /// A line that is neither blank, a comment nor `KEY=VALUE`.
    #[error("line {0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    /// A value that is not what its key needs (the name, the address, the mask, ...).
    #[error("{0}")]
    Value(#[source] TaskError),
    /// The bytes are not UTF-8 text.
    #[error("the file is not UTF-8 text")]
    NotText(#[source] std::str::Utf8Error),
}

impl IpConfig {
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
    pub fn from_ifcfg(text: &str) -> Result<Self, IfcfgError> {
        let mut get = std::collections::HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(IfcfgError::NotKeyValue(line.to_owned()));
            };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            get.insert(key.trim().to_owned(), value.to_owned());
        }
        let field = |k: &str| get.get(k).map(String::as_str).unwrap_or_default();
        let name = field("DEVICE");
        check_name(name, false).map_err(IfcfgError::Value)?;
        let ip = parse_ip(field("IPADDR"), "IPADDR").map_err(IfcfgError::Value)?;
        let mask = if get.contains_key("NETMASK") {
            field("NETMASK")
        } else {
            field("PREFIX")
        };
        let prefix = parse_mask(mask).map_err(IfcfgError::Value)?;
        let opt = |k: &str| parse_opt(field(k), k).map_err(IfcfgError::Value);
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

/// A configuration file as found: its bytes (what a rollback puts back) and what they say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The configuration they hold.
    pub config: IpConfig,
}

/// The path of a configuration's file.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("ifcfg-{name}"))
}

/// Reads the file of configuration `name`; `None` when there is none.
pub fn read(dir: &Path, name: &str) -> Result<Option<ConfigFile>, TaskError> {
    let path = path(dir, name);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(TaskError::Failed(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let config = std::str::from_utf8(&bytes)
        .map_err(IfcfgError::NotText)
        .and_then(IpConfig::from_ifcfg)
        .map_err(|e| {
            TaskError::Failed(format!(
                "{} is not a usable ifcfg file: {e}",
                path.display()
            ))
        })?;
    Ok(Some(ConfigFile { bytes, config }))
}

/// Writes the file of configuration `name` (`Some`) or removes it (`None`; already absent is
/// fine). A failed write leaves the old file as it was.
pub fn write(dir: &Path, name: &str, config: Option<&IpConfig>) -> std::io::Result<()> {
    put(
        &path(dir, name),
        config.map(|c| c.to_ifcfg().into_bytes()).as_deref(),
    )
}

/// Puts back the bytes a file had (`None`: it did not exist, so it is removed).
pub fn put_back(dir: &Path, name: &str, bytes: Option<&[u8]>) -> std::io::Result<()> {
    put(&path(dir, name), bytes)
}

fn put(path: &Path, bytes: Option<&[u8]>) -> std::io::Result<()> {
    match bytes {
        Some(bytes) => write_atomic(path, bytes),
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// The names of the configurations that have a file in `dir`, sorted.
pub fn names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            file.strip_prefix("ifcfg-").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::ip::request::tests::seed_add_ip;

    #[test]
    fn a_configuration_round_trips_through_its_file_text() {
        let (_, config) = seed_add_ip();
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
    fn a_file_that_is_not_a_configuration_says_why() {
        assert!(matches!(
            IpConfig::from_ifcfg("DEVICE=eth0:0\nnonsense\n"),
            Err(IfcfgError::NotKeyValue(line)) if line == "nonsense"
        ));
        let error =
            IpConfig::from_ifcfg("DEVICE=eth0:0\nIPADDR=10.0.0.300\nPREFIX=24\n").unwrap_err();
        assert!(matches!(&error, IfcfgError::Value(TaskError::Invalid(_))));
        assert!(std::error::Error::source(&error).is_some());
        assert!(error.to_string().contains("IPADDR"), "{error}");
    }

    #[test]
    fn files_are_read_written_removed_and_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().join("ifcfg");
        assert_eq!(read(&dir, "eth0:0").unwrap(), None);
        let config = IpConfig::from_ifcfg("DEVICE=eth0:0\nIPADDR=10.0.0.3\nPREFIX=24\n").unwrap();
        write(&dir, "eth0:0", Some(&config)).unwrap();
        let found = read(&dir, "eth0:0").unwrap().unwrap();
        assert_eq!(found.config, config);
        assert_eq!(found.bytes, config.to_ifcfg().into_bytes());
        assert_eq!(names(&dir).unwrap(), ["eth0:0"]);
        write(&dir, "eth0:0", None).unwrap();
        write(&dir, "eth0:0", None).unwrap();
        assert_eq!(read(&dir, "eth0:0").unwrap(), None);
        put_back(&dir, "eth0:0", Some(&found.bytes)).unwrap();
        assert_eq!(read(&dir, "eth0:0").unwrap(), Some(found));
        std::fs::write(path(&dir, "eth0:1"), b"IPADDR=\xff\n").unwrap();
        let error = read(&dir, "eth0:1").unwrap_err();
        assert_eq!(error.code(), 99999);
        assert!(
            error.to_string().contains("not a usable ifcfg file"),
            "{error}"
        );
    }
}
