//! What opsplane measures: every metric with its type and unit, grouped by the service type
//! that produces it (seed 001 `/monitoring/api/metrics/`), the resource types and the event
//! types (seed 001 `/resource_types/`, `/event_types/`), translated to opsplane's domain.

/// How a metric's samples aggregate (seed 001 "type").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Occurrences: `val` is the sum; min/max are over per-minute sums.
    Count,
    /// Measurements: `val` is the average sample.
    Value,
    /// Amounts over time (bytes moved): `val` is the sum divided by the interval's seconds.
    Rate,
}

impl MetricType {
    /// The seed's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Count => "count",
            MetricType::Value => "value",
            MetricType::Rate => "rate",
        }
    }
}

/// One metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Dotted name, e.g. `request.count`.
    pub name: &'static str,
    /// Aggregation.
    pub kind: MetricType,
    /// The unit / suggested axis label.
    pub unit: &'static str,
    /// Which service types produce it: `host`, `check`, `application`.
    pub service_types: &'static [&'static str],
    /// What the label of a sample holds.
    pub label: &'static str,
}

impl MetricDef {
    /// Whether `min`/`max` are over per-minute sums (GeoNode's per-period values) rather than
    /// single samples: so for counts, and for `request.users`, whose min/max are requests per
    /// minute while its `val` counts users.
    pub fn minute_extrema(&self) -> bool {
        self.kind == MetricType::Count || self.name == "request.users"
    }
}

const fn m(
    name: &'static str,
    kind: MetricType,
    unit: &'static str,
    service_types: &'static [&'static str],
    label: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        unit,
        service_types,
        label,
    }
}

use MetricType::{Count, Rate, Value};

const HOST: &[&str] = &["host"];
const CHECK: &[&str] = &["check"];
const APP: &[&str] = &["application"];
const BOTH: &[&str] = &["check", "application"];

/// Every metric opsplane stores.
pub const METRICS: &[MetricDef] = &[
    // Hosts, from node-daemon reports (seed 002 §四).
    m("cpu.usage", Value, "%", HOST, "value"),
    m("cpu.count", Value, "Count", HOST, "value"),
    m("mem.usage", Value, "%", HOST, "value"),
    m("mem.total", Value, "Byte", HOST, "value"),
    m("mem.available", Value, "Byte", HOST, "value"),
    m("storage.usage", Value, "%", HOST, "mount point"),
    m("storage.used", Value, "Byte", HOST, "mount point"),
    m("storage.total", Value, "Byte", HOST, "mount point"),
    m("disk.read.bytes", Rate, "Byte/s", HOST, "block device"),
    m("disk.write.bytes", Rate, "Byte/s", HOST, "block device"),
    m(
        "network.in.bytes",
        Rate,
        "Byte/s",
        HOST,
        "network interface",
    ),
    m(
        "network.out.bytes",
        Rate,
        "Byte/s",
        HOST,
        "network interface",
    ),
    m("vm.count", Value, "Count", HOST, "value"),
    m("service.up", Value, "Count", HOST, "systemd unit"),
    // MonitoredService checks.
    m("check.up", Value, "Count", CHECK, "instance"),
    // Application requests, from the ingestion endpoint.
    m("request.count", Count, "Count", APP, "count"),
    m("request.ip", Count, "Count", APP, "client address"),
    m("request.ua", Count, "Count", APP, "user agent"),
    m("request.path", Count, "Count", APP, "path"),
    m("request.method", Count, "Count", APP, "method"),
    m("request.users", Value, "Count", APP, "user tracking id"),
    m(
        "response.time",
        Value,
        "ms",
        BOTH,
        "value, or the instance for checks",
    ),
    m("response.size", Value, "Byte", APP, "value"),
    m("response.status", Count, "Count", BOTH, "status code"),
    m("response.error.count", Count, "Count", APP, "count"),
];

/// The metric called `name`.
pub fn metric(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|d| d.name == name)
}

/// Resource types: `(name, display type)` in seed 001's `/resource_types/` order.
pub const RESOURCE_TYPES: &[(&str, &str)] = &[
    ("", "No resource"),
    ("url", "URL"),
    ("instance", "Service instance"),
    ("host", "Host"),
    ("mount", "Mount point"),
    ("device", "Block device"),
    ("nic", "Network interface"),
    ("unit", "systemd unit"),
    ("other", "Other"),
];

/// An event type and whether it belongs to the protocol category (seed 001's `OWS:` types,
/// opsplane's machine-made events: checks and node reports) or to user requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTypeDef {
    /// Name.
    pub name: &'static str,
    /// `type_label` of seed 001.
    pub type_label: &'static str,
    /// `true` for the `ows_service=true` side: machine-made events (checks, node reports).
    pub machine: bool,
}

const fn e(name: &'static str, type_label: &'static str, machine: bool) -> EventTypeDef {
    EventTypeDef {
        name,
        type_label,
        machine,
    }
}

/// Every event type. `all` is cumulative (a query for it does not filter); `other` is the
/// default of requests that name none.
pub const EVENT_TYPES: &[EventTypeDef] = &[
    e("check:http", "HTTP check", true),
    e("check:tcp", "TCP check", true),
    e("node:report", "Node report", true),
    e("check:all", "Any machine event", true),
    e("other", "Not a machine event", false),
    e("all", "All", false),
    e("create", "Create", false),
    e("upload", "Upload", false),
    e("change", "Change", false),
    e("change_metadata", "Change Metadata", false),
    e("view_metadata", "View Metadata", false),
    e("view", "View", false),
    e("download", "Download", false),
    e("publish", "Publish", false),
    e("remove", "Remove", false),
];

/// The event type called `name`.
pub fn event_type(name: &str) -> Option<&'static EventTypeDef> {
    EVENT_TYPES.iter().find(|d| d.name == name)
}

/// The label of samples without one of their own, by metric type (seed 001: "count" or
/// "value").
pub fn default_label(kind: MetricType) -> &'static str {
    match kind {
        MetricType::Count => "count",
        MetricType::Value | MetricType::Rate => "value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_unique_and_typed() {
        let mut names: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        assert_eq!(
            metric("request.ua").map(|m| m.kind),
            Some(MetricType::Count)
        );
        assert_eq!(metric("response.time").map(|m| m.unit), Some("ms"));
        assert!(metric("no.such").is_none());
    }
}
