//! What opsplane measures: every metric with its type and unit, grouped by the service type
//! that produces it (seed 001 `/monitoring/api/metrics/`), the resource types and the event
//! types (seed 001 `/resource_types/`, `/event_types/`), translated to opsplane's domain.

/// How a metric's samples aggregate into `val`.
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
    /// Aggregation of `val`.
    pub kind: MetricType,
    /// The `type` the API reports: seed 001's where it shows one (`request.count`,
    /// `request.ip`, `request.ua`: `count`; `request.users`: `value`), else GeoNode 4.4.5's
    /// (`models.populate()`): `request.path/method`, `response.status`: `value`;
    /// `response.time/size`: `rate`.
    pub reported: MetricType,
    /// The metric whose samples this name reads: itself, or for GeoNode's host metric names
    /// (`cpu.usage.percent`, `mem.usage.percent`, `mem.free`, `uptime`) the opsplane metric
    /// node reports already measure.
    pub stored: &'static str,
    /// Whether every observation is stored once without a resource besides once per resource
    /// it touched (request events and checks): plain totals then read only the resource-less
    /// samples (each request counted once) and groupings by resource or event type only the
    /// resource-bound ones (GeoNode's join on resources).
    pub per_request: bool,
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

    /// Whether `group_by=resource_no_label` counts distinct labels (seed 001's request.users
    /// example) rather than aggregating values.
    pub fn distinct_per_resource(&self) -> bool {
        self.reported == MetricType::Value
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
        reported: kind,
        stored: name,
        per_request: false,
        unit,
        service_types,
        label,
    }
}

/// A metric of request events (and checks): stored once per request and once per resource.
const fn r(
    name: &'static str,
    kind: MetricType,
    reported: MetricType,
    unit: &'static str,
    service_types: &'static [&'static str],
    label: &'static str,
) -> MetricDef {
    MetricDef {
        reported,
        per_request: true,
        ..m(name, kind, unit, service_types, label)
    }
}

/// GeoNode's name for a metric opsplane stores under `stored`.
const fn alias(
    name: &'static str,
    stored: &'static str,
    kind: MetricType,
    unit: &'static str,
    service_types: &'static [&'static str],
) -> MetricDef {
    MetricDef {
        stored,
        ..m(name, kind, unit, service_types, "value")
    }
}

use MetricType::{Count, Rate, Value};

const HOST: &[&str] = &["host"];
const CHECK: &[&str] = &["check"];
const APP: &[&str] = &["application"];
const BOTH: &[&str] = &["check", "application"];
const GEONODE_HOSTS: &[&str] = &["hostgeonode", "hostgeoserver"];

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
    r("check.up", Value, Value, "Count", CHECK, "instance"),
    // Application requests, from the ingestion endpoint.
    r("request.count", Count, Count, "Count", APP, "count"),
    r("request.ip", Count, Count, "Count", APP, "client address"),
    r("request.ua", Count, Count, "Count", APP, "user agent"),
    r(
        "request.ua.family",
        Count,
        Value,
        "Count",
        APP,
        "user agent family",
    ),
    r("request.path", Count, Value, "Count", APP, "path"),
    r("request.method", Count, Value, "Count", APP, "method"),
    r(
        "request.country",
        Count,
        Value,
        "Count",
        APP,
        "ISO country code",
    ),
    r("request.region", Count, Value, "Count", APP, "region"),
    r("request.city", Count, Value, "Count", APP, "city"),
    // GeoNode: val = Σ of the per-period counts (a user with two requests shows 2.0000).
    r(
        "request.users",
        Count,
        Value,
        "Count",
        APP,
        "user tracking id",
    ),
    r(
        "response.time",
        Value,
        Rate,
        "ms",
        BOTH,
        "value, or the instance for checks",
    ),
    r("response.size", Value, Rate, "Byte", APP, "value"),
    r(
        "response.status",
        Count,
        Value,
        "Count",
        BOTH,
        "status code",
    ),
    r("response.error.count", Count, Count, "Count", APP, "count"),
    // GeoNode's host metric names (its hardware panels ask them of hostgeonode/hostgeoserver
    // services), read from what node reports measure.
    alias("cpu.usage.percent", "cpu.usage", Value, "%", GEONODE_HOSTS),
    alias("mem.usage.percent", "mem.usage", Value, "%", GEONODE_HOSTS),
    alias("mem.free", "mem.available", Value, "Byte", GEONODE_HOSTS),
    alias("uptime", "uptime", Value, "s", HOST),
];

/// The metric called `name`.
pub fn metric(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|d| d.name == name)
}

/// Resource types: `(name, display type)` in seed 001's `/resource_types/` order: GeoNode
/// 4.4.5's (`MonitoredResource.TYPES`; `layer` is the seed's and GeoNode ≤3.3's name of
/// `dataset`) and then opsplane's own.
pub const RESOURCE_TYPES: &[(&str, &str)] = &[
    ("", "No resource"),
    ("dataset", "Dataset"),
    ("layer", "Layer"),
    ("map", "Map"),
    ("resource_base", "Resource base"),
    ("document", "Document"),
    ("style", "Style"),
    ("admin", "Admin"),
    ("url", "URL"),
    ("instance", "Service instance"),
    ("host", "Host"),
    ("mount", "Mount point"),
    ("device", "Block device"),
    ("nic", "Network interface"),
    ("unit", "systemd unit"),
    ("other", "Other"),
];

/// Whether `name` is a resource type of the catalog.
pub fn resource_type(name: &str) -> bool {
    RESOURCE_TYPES.iter().any(|(n, _)| *n == name)
}

/// Whether a filter on the resource type `asked` selects a resource stored with the type
/// `stored`. `layer` and `dataset` are one type under two names: the seed's `resource_type=layer`
/// ("only Layer objects") and GeoNode 4.x's `dataset` (4.0 renamed layers to datasets; its own
/// bundled frontend still asks `resource_type=layer`), so a feed of either name answers both.
pub fn resource_type_matches(asked: &str, stored: &str) -> bool {
    const LAYER: [&str; 2] = ["layer", "dataset"];
    asked == stored || (LAYER.contains(&asked) && LAYER.contains(&stored))
}

/// An event type and whether it belongs to the protocol category (seed 001's `OWS:` types,
/// opsplane's machine-made events: checks and node reports) or to user requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTypeDef {
    /// Name.
    pub name: &'static str,
    /// `type_label` of seed 001.
    pub type_label: &'static str,
    /// `true` for the `ows_service=true` side: OWS requests and machine-made events.
    pub machine: bool,
    /// Whether it names a set of other event types rather than one kind of request.
    pub aggregate: bool,
}

const fn e(name: &'static str, type_label: &'static str, machine: bool) -> EventTypeDef {
    EventTypeDef {
        name,
        type_label,
        machine,
        aggregate: false,
    }
}

const fn agg(name: &'static str, type_label: &'static str, machine: bool) -> EventTypeDef {
    EventTypeDef {
        aggregate: true,
        ..e(name, type_label, machine)
    }
}

/// Every event type: GeoNode 4.4.5's (`EVENT_TYPES`) and opsplane's machine-made ones.
/// The aggregates: `all` = every request, `other` = every request that is not an OWS or
/// machine event (GeoNode's "Not OWS"; events sent without a type are stored as `other`),
/// `OWS:ALL` = every `OWS:*` request, `check:all` = every check and node report.
pub const EVENT_TYPES: &[EventTypeDef] = &[
    e("OWS:TMS", "TMS", true),
    e("OWS:WMS-C", "WMS-C", true),
    e("OWS:WMTS", "WMTS", true),
    e("OWS:WCS", "WCS", true),
    e("OWS:WFS", "WFS", true),
    e("OWS:WMS", "WMS", true),
    e("OWS:WPS", "WPS", true),
    agg("OWS:ALL", "Any OWS", true),
    e("check:http", "HTTP check", true),
    e("check:tcp", "TCP check", true),
    e("node:report", "Node report", true),
    agg("check:all", "Any machine event", true),
    agg("other", "Not OWS", false),
    agg("all", "All", false),
    e("create", "Create", false),
    e("upload", "Upload", false),
    e("change", "Change", false),
    e("change_metadata", "Change Metadata", false),
    e("view_metadata", "View Metadata", false),
    e("view", "View", false),
    e("download", "Download", false),
    e("publish", "Publish", false),
    e("remove", "Remove", false),
    e("geoserver", "Geoserver event", false),
];

impl EventTypeDef {
    /// Whether a stored event of type `stored` belongs to this event type (itself, or one of
    /// the set an aggregate names).
    pub fn covers(&self, stored: &str) -> bool {
        match self.name {
            "all" => true,
            "OWS:ALL" => stored.starts_with("OWS:"),
            "check:all" => stored.starts_with("check:") || stored == "node:report",
            "other" => event_type(stored).is_none_or(|d| !d.machine),
            name => name == stored,
        }
    }
}

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
    fn layer_and_dataset_filters_select_each_other() {
        for (asked, stored) in [("layer", "dataset"), ("dataset", "layer")] {
            assert!(resource_type_matches(asked, stored), "{asked} → {stored}");
            assert!(resource_type_matches(asked, asked));
        }
        assert!(resource_type_matches("map", "map"));
        assert!(!resource_type_matches("layer", "map"));
        assert!(!resource_type_matches("document", "dataset"));
        assert!(!resource_type_matches("url", "layer"));
    }

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
        // Seed 001 types where it shows them, GeoNode's elsewhere.
        for (name, reported) in [
            ("request.count", MetricType::Count),
            ("request.ip", MetricType::Count),
            ("request.users", MetricType::Value),
            ("request.path", MetricType::Value),
            ("response.status", MetricType::Value),
            ("response.time", MetricType::Rate),
            ("response.size", MetricType::Rate),
        ] {
            assert_eq!(metric(name).map(|m| m.reported), Some(reported), "{name}");
        }
        assert_eq!(
            metric("cpu.usage.percent").map(|m| m.stored),
            Some("cpu.usage")
        );
        for m in METRICS {
            assert!(
                metric(m.stored).is_some(),
                "{} reads a known metric",
                m.name
            );
        }
        assert_eq!(metric("response.time").map(|m| m.unit), Some("ms"));
        assert!(metric("no.such").is_none());
    }

    #[test]
    fn aggregate_event_types_cover_geonodes_sets() {
        let covers = |agg: &str, stored: &str| event_type(agg).is_some_and(|d| d.covers(stored));
        assert!(covers("all", "OWS:WMS") && covers("all", "view"));
        assert!(covers("OWS:ALL", "OWS:WFS") && !covers("OWS:ALL", "view"));
        assert!(covers("other", "view") && covers("other", "other") && covers("other", "mine"));
        assert!(!covers("other", "OWS:WMS") && !covers("other", "check:http"));
        assert!(covers("view", "view") && !covers("view", "download"));
        assert!(covers("check:all", "node:report"));
    }
}
