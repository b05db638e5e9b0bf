//! The node report (seed 002 §四): the body a node-daemon POSTs to the operator's `/` every
//! report interval, one type for both binaries. The daemon builds it from its sampler
//! snapshot; the operator parses it with [`NodeReport::from_slice`], whose errors name the
//! field path (`data.disk./.total: invalid type: ...`).
//!
//! ```json
//! {"hostname": "zhouli33", "ip": "172.16.1.33", "utc": 1577179877, "type": "resource",
//!  "node_uuid": "1231...", "data": {"cpu": {"numbers": 4, "utilization": 20.6}, ...}}
//! ```
//!
//! `type` says what `data` is: [`ResourceData`] (§四.1) or [`ServiceStates`] (§四.2). The
//! daemon has always written the keys in sorted order — `data` first, `type` last — so a
//! receiver meets `data` before it knows its type. That is why the body is read in two steps
//! (head with `data` kept as JSON, then `data` as the type's body) rather than through serde's
//! adjacently tagged enums, which would buffer `data` and lose the path of an error inside it.
//! The Rust field order of every struct here is the wire order: serializing a report gives the
//! bytes the daemon always sent.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The latest `utc` a report may carry: 9999-12-31T23:59:59Z, the last second that times in
/// the store (milliseconds, RFC 3339) can hold.
pub const MAX_UTC: i64 = 253_402_300_799;

/// Longest host name a report may carry (a DNS name).
pub const MAX_HOSTNAME: usize = 253;

/// One node report.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    /// The node's host name.
    pub hostname: String,
    /// The node's IP address as configured on the daemon (may be empty).
    pub ip: String,
    /// Unix time of the sampling cycle the report comes from.
    pub utc: i64,
    /// The node's UUID (TimerHandler `update` sets it; may be empty).
    pub node_uuid: String,
    /// `type` and `data`.
    pub body: ReportBody,
}

/// What a report carries: its `type` and `data`.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportBody {
    /// `"type": "resource"`: host resources (§四.1).
    Resource(ResourceData),
    /// `"type": "service"`: service states (§四.2).
    Service(ServiceStates),
}

/// The `type` of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    /// Host resources.
    Resource,
    /// Service states.
    Service,
}

impl ReportKind {
    /// The wire name, also the operator's `type` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Resource => "resource",
            ReportKind::Service => "service",
        }
    }
}

impl ReportBody {
    /// The report's `type`.
    pub fn kind(&self) -> ReportKind {
        match self {
            ReportBody::Resource(_) => ReportKind::Resource,
            ReportBody::Service(_) => ReportKind::Service,
        }
    }
}

/// §四.1 `data`: a section per probe; a section whose probe failed in the cycle is left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceData {
    /// `cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// `disk`: filesystems by mount point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<BTreeMap<String, Filesystem>>,
    /// `diskio`: cumulative counters by block device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diskio: Option<BTreeMap<String, DiskCounters>>,
    /// `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// `networkio`: cumulative counters by interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networkio: Option<BTreeMap<String, NicCounters>>,
    /// `vm`: running VMs. The opsplane daemon does not send it; other senders of the seed
    /// body do, as `{"numbers": n}` or a bare number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmCount>,
    /// `uptime`: seconds since the host booted, at `utc` (opsplane's addition to the seed body,
    /// from `/proc/stat`'s `btime`; GeoNode's `uptime` metric). Left out when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<u64>,
}

/// `data.cpu`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cpu {
    /// Logical cores.
    pub numbers: u32,
    /// Busy percent over the last sampling interval, one decimal.
    pub utilization: f64,
}

/// `data.memory`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Memory {
    /// Bytes available for new work.
    pub available: u64,
    /// Bytes in all.
    pub total: u64,
    /// Used percent, one decimal.
    pub utilization: f64,
}

/// `data.disk.<mount point>`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Filesystem {
    /// Capacity in bytes.
    pub total: u64,
    /// Disk type: 0 HDD, 1 other, 2 SSD, 3 NVMe, 4 virtio.
    #[serde(rename = "type")]
    pub disk_type: u8,
    /// Used bytes.
    pub used: u64,
    /// Used percent of what unprivileged users can use, one decimal.
    pub utilization: f64,
}

/// `data.diskio.<device>`: bytes moved since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiskCounters {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

/// `data.networkio.<interface>`: bytes through the interface since it appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NicCounters {
    /// Bytes received.
    pub bytes_recv: u64,
    /// Bytes sent (the seed's spelling).
    pub bytes_send: u64,
}

/// `data.vm`, in either of the shapes senders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum VmCount {
    /// `{"numbers": n}`, as seed 002 §二.8 answers.
    Object {
        /// Running VMs.
        numbers: u64,
    },
    /// A bare number.
    Number(u64),
}

impl VmCount {
    /// Running VMs.
    pub fn numbers(self) -> u64 {
        match self {
            VmCount::Object { numbers } | VmCount::Number(numbers) => numbers,
        }
    }
}

/// §四.2 `data`: each configured service's state; only `"running"` is healthy.
pub type ServiceStates = BTreeMap<String, String>;

/// The state of a healthy service.
pub const RUNNING: &str = "running";

/// Why a body is not a node report. The message names the field (`data.cpu.numbers: ...`).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The body is not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("a node report is a JSON object")]
    NotObject,
    /// `type` is missing or not one of the two kinds.
    #[error("type must be \"resource\" or \"service\"{}", got.as_ref().map(|g| format!(", got {g:?}")).unwrap_or_default())]
    Kind {
        /// The `type` sent, when there was one.
        got: Option<String>,
    },
    /// `hostname` is empty or too long.
    #[error("hostname must be a non-empty string of at most {MAX_HOSTNAME} characters")]
    Hostname,
    /// A field is missing or has the wrong type.
    #[error("{}{source}", if path == "." { String::new() } else { format!("{path}: ") })]
    Field {
        /// Where: `utc`, `data.disk./.total`; `.` for the whole body.
        path: String,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
}

impl ReportError {
    fn at(error: serde_path_to_error::Error<serde_json::Error>, prefix: Option<&str>) -> Self {
        let path = error.path().to_string();
        let path = match prefix {
            Some(prefix) if path == "." => prefix.to_owned(),
            Some(prefix) => format!("{prefix}.{path}"),
            None => path,
        };
        let source = error.into_inner();
        if source.is_syntax() || source.is_eof() {
            ReportError::NotJson(source)
        } else {
            ReportError::Field { path, source }
        }
    }
}

/// The wire shape of a report with `data` not yet typed.
#[derive(Deserialize)]
struct Head {
    hostname: String,
    ip: String,
    utc: i64,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    node_uuid: String,
    data: Value,
}

impl Head {
    fn into_report(self) -> Result<NodeReport, ReportError> {
        let kind = match self.kind.as_deref() {
            Some("resource") => ReportKind::Resource,
            Some("service") => ReportKind::Service,
            _ => return Err(ReportError::Kind { got: self.kind }),
        };
        if self.hostname.is_empty() || self.hostname.len() > MAX_HOSTNAME {
            return Err(ReportError::Hostname);
        }
        let data = |e| ReportError::at(e, Some("data"));
        let body = match kind {
            ReportKind::Resource => {
                ReportBody::Resource(serde_path_to_error::deserialize(self.data).map_err(data)?)
            }
            ReportKind::Service => {
                ReportBody::Service(serde_path_to_error::deserialize(self.data).map_err(data)?)
            }
        };
        Ok(NodeReport {
            hostname: self.hostname,
            ip: self.ip,
            utc: self.utc,
            node_uuid: self.node_uuid,
            body,
        })
    }
}

impl NodeReport {
    /// The report's `type`.
    pub fn kind(&self) -> ReportKind {
        self.body.kind()
    }

    /// Parses a report body; the error names the first wrong field by its path.
    pub fn from_slice(body: &[u8]) -> Result<NodeReport, ReportError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let head: Head = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            match ReportError::at(e, None) {
                // serde would also read a struct from an array: say what a report is instead
                ReportError::Field { path, .. }
                    if path == "."
                        && body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') =>
                {
                    ReportError::NotObject
                }
                other => other,
            }
        })?;
        de.end().map_err(ReportError::NotJson)?;
        head.into_report()
    }
}

/// The OpenAPI schema of the body (the operator's `POST /`): the head fields and `data` of
/// the kind `type` names.
impl utoipa::PartialSchema for NodeReport {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let kind = |kind: &str, data: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            ObjectBuilder::new()
                .property(
                    "hostname",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(MAX_HOSTNAME)),
                )
                .property("ip", ObjectBuilder::new().schema_type(Type::String))
                .property(
                    "utc",
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Int64,
                        )))
                        .minimum(Some(0))
                        .description(Some("Unix time of the sampling cycle")),
                )
                .property("node_uuid", ObjectBuilder::new().schema_type(Type::String))
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([kind])),
                )
                .property("data", data)
                .required("hostname")
                .required("ip")
                .required("utc")
                .required("node_uuid")
                .required("type")
                .required("data")
                .build()
        };
        let services = ObjectBuilder::new()
            .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some("each service's state; only `running` is healthy"))
            .build();
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::OneOf(
            OneOfBuilder::new()
                .item(kind(
                    "resource",
                    <ResourceData as utoipa::PartialSchema>::schema(),
                ))
                .item(kind("service", services.into()))
                .description(Some("seed 002 §四: a resource or a service report"))
                .build(),
        ))
    }
}

impl utoipa::ToSchema for NodeReport {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <ResourceData as utoipa::ToSchema>::schemas(schemas);
    }
}

/// The wire shape for writing: sorted keys, as the daemon always sent them.
#[derive(Serialize)]
struct WireRef<'a> {
    data: DataRef<'a>,
    hostname: &'a str,
    ip: &'a str,
    node_uuid: &'a str,
    #[serde(rename = "type")]
    kind: ReportKind,
    utc: i64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DataRef<'a> {
    Resource(&'a ResourceData),
    Service(&'a ServiceStates),
}

impl Serialize for NodeReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireRef {
            data: match &self.body {
                ReportBody::Resource(r) => DataRef::Resource(r),
                ReportBody::Service(s) => DataRef::Service(s),
            },
            hostname: &self.hostname,
            ip: &self.ip,
            node_uuid: &self.node_uuid,
            kind: self.kind(),
            utc: self.utc,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NodeReport {
    /// The same checks as [`NodeReport::from_slice`]; an error inside `data` carries its path
    /// in the message.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Head::deserialize(deserializer)?
            .into_report()
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_RESOURCE: &str = r#"{
        "hostname": "zhouli33", "ip": "172.16.1.33", "utc": 1577179877, "type": "resource",
        "node_uuid": "123142342342342342343",
        "data": {
            "cpu": {"numbers": 4, "utilization": 20.6},
            "memory": {"available": 4958343168, "total": 7144353792, "utilization": 30.6},
            "disk": {
                "/": {"type": 2, "total": 14371782656, "used": 11806334976, "utilization": 82.1},
                "/boot": {"type": 1, "total": 1063256064, "used": 246792192, "utilization": 23.2}
            },
            "diskio": {"sda": {"read_bytes": 1217431552, "write_bytes": 4599874560}},
            "networkio": {"ens192": {"bytes_recv": 70831805, "bytes_send": 229473046}}
        }
    }"#;

    const SEED_SERVICE: &str = r#"{"hostname": "zhouli33", "ip": "172.16.1.33", "utc": 1577183023,
        "type": "service", "node_uuid": "123142342342342342343",
        "data": {"httpd": "not found", "libvirtd": "running"}}"#;

    fn error(body: &str) -> String {
        NodeReport::from_slice(body.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_seed_examples_parse_into_their_typed_bodies() {
        let report = NodeReport::from_slice(SEED_RESOURCE.as_bytes()).unwrap();
        assert_eq!(report.hostname, "zhouli33");
        assert_eq!(report.utc, 1577179877);
        let ReportBody::Resource(data) = &report.body else {
            panic!("{report:?}");
        };
        assert_eq!(
            data.cpu,
            Some(Cpu {
                numbers: 4,
                utilization: 20.6
            })
        );
        assert_eq!(data.disk.as_ref().unwrap()["/"].disk_type, 2);
        assert_eq!(
            data.networkio.as_ref().unwrap()["ens192"].bytes_send,
            229473046
        );
        assert_eq!(data.vm, None);

        let report = NodeReport::from_slice(SEED_SERVICE.as_bytes()).unwrap();
        assert_eq!(report.kind(), ReportKind::Service);
        let ReportBody::Service(states) = &report.body else {
            panic!("{report:?}");
        };
        assert_eq!(states["libvirtd"], RUNNING);
    }

    #[test]
    fn a_report_serializes_with_sorted_keys_and_reads_back_equal() {
        let report = NodeReport::from_slice(SEED_SERVICE.as_bytes()).unwrap();
        let text = serde_json::to_string(&report).unwrap();
        assert_eq!(
            text,
            r#"{"data":{"httpd":"not found","libvirtd":"running"},"hostname":"zhouli33","ip":"172.16.1.33","node_uuid":"123142342342342342343","type":"service","utc":1577183023}"#
        );
        assert_eq!(NodeReport::from_slice(text.as_bytes()).unwrap(), report);
        let report = NodeReport::from_slice(SEED_RESOURCE.as_bytes()).unwrap();
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.starts_with(r#"{"data":{"cpu":{"numbers":4,"utilization":20.6},"disk":{"/":{"total":14371782656,"type":2,"#), "{text}");
        assert_eq!(serde_json::from_str::<NodeReport>(&text).unwrap(), report);
    }

    #[test]
    fn a_bad_field_is_named_by_its_path() {
        let bad = SEED_RESOURCE.replace("\"total\": 14371782656", "\"total\": \"big\"");
        let message = error(&bad);
        assert!(
            message.starts_with("data.disk./.total: invalid type"),
            "{message}"
        );
        let bad = SEED_RESOURCE.replace("\"numbers\": 4", "\"numbers\": -4");
        assert!(
            error(&bad).starts_with("data.cpu.numbers: "),
            "{}",
            error(&bad)
        );
        let bad = SEED_RESOURCE.replace("\"utc\": 1577179877", "\"utc\": \"now\"");
        assert!(
            error(&bad).starts_with("utc: invalid type"),
            "{}",
            error(&bad)
        );
        let bad = SEED_SERVICE.replace("\"running\"", "1");
        assert!(
            error(&bad).starts_with("data.libvirtd: "),
            "{}",
            error(&bad)
        );
        let bad = SEED_SERVICE.replace("\"ip\": \"172.16.1.33\",", "");
        assert!(
            error(&bad).contains("missing field `ip`"),
            "{}",
            error(&bad)
        );
        let bad = SEED_RESOURCE.replace(
            "\"cpu\": {\"numbers\": 4, \"utilization\": 20.6}",
            "\"cpu\": 5",
        );
        assert!(
            error(&bad).starts_with("data.cpu: invalid type"),
            "{}",
            error(&bad)
        );
    }

    #[test]
    fn type_hostname_and_syntax_errors_say_what_is_expected() {
        let untyped = SEED_SERVICE.replace("\"type\": \"service\",", "");
        assert_eq!(error(&untyped), "type must be \"resource\" or \"service\"");
        let odd = SEED_SERVICE.replace("\"service\"", "\"tasks\"");
        assert_eq!(
            error(&odd),
            "type must be \"resource\" or \"service\", got \"tasks\""
        );
        let nameless = SEED_SERVICE.replace("\"zhouli33\"", "\"\"");
        assert!(error(&nameless).starts_with("hostname must be"));
        assert!(error("{not json").starts_with("not JSON: "));
        assert!(error(&format!("{SEED_SERVICE} x")).starts_with("not JSON: "));
        assert_eq!(error("[]"), "a node report is a JSON object");
        assert_eq!(error("5"), "a node report is a JSON object");
        assert!(error("{}").starts_with("missing field"), "{}", error("{}"));
    }

    #[test]
    fn vm_is_read_as_an_object_or_a_bare_number() {
        for (vm, n) in [("{\"numbers\": 3}", 3), ("7", 7)] {
            let body = SEED_RESOURCE.replace("\"cpu\":", &format!("\"vm\": {vm}, \"cpu\":"));
            let report = NodeReport::from_slice(body.as_bytes()).unwrap();
            let ReportBody::Resource(data) = report.body else {
                panic!()
            };
            assert_eq!(data.vm.map(VmCount::numbers), Some(n));
        }
    }
}
