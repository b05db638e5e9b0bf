//! What a node report (seed 002 §四, [`NodeReport`]) becomes in the store, without I/O:
//! host samples of the service `host:<hostname>`, the registry attributes of that service and
//! of the host, and the counters the next report of the host is compared with.
//!
//! Disk and network counters are cumulative in a report; the store keeps per-interval amounts,
//! so a sample is the delta to the previous report's reading. The previous readings live in the
//! host's registry entry (`counters`), so every replica computes the same deltas. A counter
//! that went down was reset (reboot, device re-added) and gives no sample; neither does the
//! first report of a host, which only sets the baseline.

use std::collections::BTreeMap;

use opsplane_resources::node_report::{NodeReport, RUNNING, ReportBody, ResourceData};
use serde_json::{Value, json};

use super::Named;

/// Event type of every node-report sample.
const EVENT_TYPE: &str = "node:report";

/// The counter readings of a host's previous resource report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// The `utc` of the report they come from.
    pub utc: Option<i64>,
    /// `<metric>|<device>` → the cumulative value.
    pub values: BTreeMap<String, f64>,
}

impl Counters {
    /// The counters kept in a host's registry attributes (`{"counters": {"utc": .., "<metric>|<device>": ..}}`);
    /// none when the host has not reported counters yet.
    pub fn from_host_attrs(attrs: &Value) -> Counters {
        let Some(kept) = attrs.get("counters").and_then(Value::as_object) else {
            return Counters::default();
        };
        Counters {
            utc: kept.get("utc").and_then(Value::as_i64),
            values: kept
                .iter()
                .filter(|(key, _)| key.as_str() != "utc")
                .filter_map(|(key, value)| Some((key.clone(), value.as_f64()?)))
                .collect(),
        }
    }

    /// The `counters` attribute to keep; `None` when there are no readings (a service report).
    fn to_attr(&self) -> Option<Value> {
        if self.values.is_empty() {
            return None;
        }
        let mut kept: serde_json::Map<String, Value> = self
            .values
            .iter()
            .map(|(key, value)| (key.clone(), json!(value)))
            .collect();
        kept.insert("utc".into(), json!(self.utc));
        Some(Value::Object(kept))
    }
}

/// The registry service a host's samples belong to.
pub fn host_service(hostname: &str) -> String {
    format!("host:{hostname}")
}

/// The samples of `report` for `service` (see [`host_service`]) and the counters to keep for
/// the next report; `previous` are the counters kept from the report before.
pub fn report_samples<'a>(
    report: &'a NodeReport,
    service: &'a str,
    previous: &Counters,
) -> (Vec<Named<'a>>, Counters) {
    let utc = report.utc;
    let mut named = Vec::new();
    let mut counters = Counters {
        utc: Some(utc),
        values: BTreeMap::new(),
    };
    match &report.body {
        ReportBody::Resource(data) => {
            gauges(data, service, utc, &mut named);
            let diskio = data.diskio.iter().flatten().flat_map(|(device, c)| {
                [
                    ("disk.read.bytes", device, c.read_bytes),
                    ("disk.write.bytes", device, c.write_bytes),
                ]
                .map(|(metric, device, value)| (metric, "device", device, value))
            });
            let networkio = data.networkio.iter().flatten().flat_map(|(nic, c)| {
                [
                    ("network.in.bytes", nic, c.bytes_recv),
                    ("network.out.bytes", nic, c.bytes_send),
                ]
                .map(|(metric, nic, value)| (metric, "nic", nic, value))
            });
            for (metric, kind, device, value) in diskio.chain(networkio) {
                let now = value as f64;
                let key = format!("{metric}|{device}");
                let before = previous.values.get(&key).copied();
                counters.values.insert(key, now);
                if let (Some(before), Some(then)) = (before, previous.utc)
                    && now >= before
                    && utc > then
                {
                    named.extend(Named::host(
                        metric,
                        service,
                        Some(device),
                        Some((kind, device)),
                        utc,
                        Some(now - before),
                    ));
                }
            }
        }
        ReportBody::Service(states) => {
            for (unit, state) in states {
                let up = if state == RUNNING { 1.0 } else { 0.0 };
                named.extend(Named::host(
                    "service.up",
                    service,
                    Some(unit),
                    Some(("unit", unit)),
                    utc,
                    Some(up),
                ));
            }
        }
    }
    (named, counters)
}

/// The samples of the readings that are not counters.
fn gauges<'a>(data: &'a ResourceData, service: &'a str, utc: i64, named: &mut Vec<Named<'a>>) {
    for (metric, value) in [
        ("cpu.usage", data.cpu.map(|c| c.utilization)),
        ("cpu.count", data.cpu.map(|c| f64::from(c.numbers))),
        ("mem.usage", data.memory.map(|m| m.utilization)),
        ("mem.total", data.memory.map(|m| m.total as f64)),
        ("mem.available", data.memory.map(|m| m.available as f64)),
        ("vm.count", data.vm.map(|v| v.numbers() as f64)),
        ("uptime", data.uptime.map(|u| u as f64)),
    ] {
        named.extend(Named::host(metric, service, None, None, utc, value));
    }
    for (mount, fs) in data.disk.iter().flatten() {
        for (metric, value) in [
            ("storage.usage", fs.utilization),
            ("storage.used", fs.used as f64),
            ("storage.total", fs.total as f64),
        ] {
            named.extend(Named::host(
                metric,
                service,
                Some(mount),
                Some(("mount", mount)),
                utc,
                Some(value),
            ));
        }
    }
}

/// The registry attributes of the host service: what it is and when it last reported, the
/// interval being the time since the previous resource report (60 s before there is one).
pub fn service_attrs(report: &NodeReport, previous: &Counters) -> Value {
    let interval = previous
        .utc
        .map(|then| report.utc - then)
        .filter(|d| *d > 0)
        .unwrap_or(60);
    json!({
        "type": "host",
        "host": report.hostname,
        "check_interval": interval,
        "last_check": opsplane_store::query::format_time(report.utc.saturating_mul(1000)),
    })
}

/// The registry attributes of the host, with the counters to keep when the report had any.
pub fn host_attrs(report: &NodeReport, counters: &Counters, sender: Option<&str>) -> Value {
    let mut attrs =
        json!({"ip": report.ip, "node_uuid": report.node_uuid, "last_report": report.utc});
    if let Some(kept) = counters.to_attr() {
        attrs["counters"] = kept;
    }
    if let ReportBody::Resource(data) = &report.body {
        attrs["summary"] = summary(data, report.utc);
    }
    if let Some(sender) = sender.map(clean_sender).filter(|s| !s.is_empty()) {
        if let Some(version) = sender
            .strip_prefix("opsplane-node-daemon/")
            .and_then(|v| v.split_whitespace().next())
        {
            attrs["daemon_version"] = json!(version);
        }
        attrs["sender"] = json!(sender);
    }
    attrs
}

/// The sender's `User-Agent` as kept: printable ASCII, at most 200 bytes.
fn clean_sender(agent: &str) -> String {
    agent
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

/// What a resource report says of the host now (the `nodes` resource's summary): CPU and
/// memory as reported, the disks summed over their mounts, the uptime; sections the report
/// left out are absent.
pub fn summary(data: &ResourceData, utc: i64) -> Value {
    let mut out = json!({"utc": utc});
    if let Some(cpu) = data.cpu {
        out["cpu"] = json!({"numbers": cpu.numbers, "utilization": cpu.utilization});
    }
    if let Some(m) = data.memory {
        out["memory"] =
            json!({"total": m.total, "available": m.available, "utilization": m.utilization});
    }
    if let Some(disks) = &data.disk {
        let total: u64 = disks.values().map(|f| f.total).fold(0, u64::saturating_add);
        let used: u64 = disks.values().map(|f| f.used).fold(0, u64::saturating_add);
        let utilization = if total == 0 {
            0.0
        } else {
            (used as f64 / total as f64 * 1000.0).round() / 10.0
        };
        out["disk"] = json!({"mounts": disks.len(), "total": total, "used": used, "utilization": utilization});
    }
    if let Some(uptime) = data.uptime {
        out["uptime"] = json!(uptime);
    }
    out
}

impl<'a> Named<'a> {
    /// A host sample of a node report; none when the value is missing or not finite.
    fn host(
        metric: &'static str,
        service: &'a str,
        label: Option<&'a str>,
        resource: Option<(&'static str, &'a str)>,
        ts: i64,
        value: Option<f64>,
    ) -> Option<Named<'a>> {
        let value = value.filter(|v| v.is_finite())?;
        Some(Named {
            metric,
            service: service.into(),
            resource: resource.map(|(kind, name)| (kind.into(), name.into())),
            label: label.map(Into::into),
            event_type: Some(EVENT_TYPE.into()),
            ts,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOURCE: &str = r#"{"hostname": "zhouli33", "ip": "172.16.1.33", "utc": 1000,
        "type": "resource", "node_uuid": "u-1",
        "data": {
            "cpu": {"numbers": 4, "utilization": 20.6},
            "memory": {"available": 400, "total": 1000, "utilization": 60.0},
            "disk": {"/": {"type": 2, "total": 100, "used": 25, "utilization": 25.0}},
            "diskio": {"sda": {"read_bytes": 5000, "write_bytes": 7000}},
            "networkio": {"lo": {"bytes_recv": 100, "bytes_send": 100}}
        }}"#;

    fn report(text: &str) -> NodeReport {
        NodeReport::from_slice(text.as_bytes()).unwrap()
    }

    /// `(metric, label, value)` of each sample.
    fn rows(named: &[Named<'_>]) -> Vec<(&'static str, Option<String>, f64)> {
        named
            .iter()
            .map(|n| (n.metric, n.label.as_deref().map(str::to_owned), n.value))
            .collect()
    }

    fn counters(utc: i64, values: &[(&str, f64)]) -> Counters {
        Counters {
            utc: Some(utc),
            values: values.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn a_first_report_gives_gauges_and_only_sets_the_counter_baseline() {
        let report = report(RESOURCE);
        let (named, kept) = report_samples(&report, "host:zhouli33", &Counters::default());
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            rows(&named),
            [
                ("cpu.usage", None, 20.6),
                ("cpu.count", None, 4.0),
                ("mem.usage", None, 60.0),
                ("mem.total", None, 1000.0),
                ("mem.available", None, 400.0),
                ("storage.usage", some("/"), 25.0),
                ("storage.used", some("/"), 25.0),
                ("storage.total", some("/"), 100.0),
            ]
        );
        assert!(named.iter().all(|n| n.service == "host:zhouli33"
            && n.ts == 1000
            && n.event_type.as_deref() == Some("node:report")));
        assert_eq!(
            named[5].resource,
            Some(("mount".into(), "/".into())),
            "a mount is a resource"
        );
        assert_eq!(
            kept,
            counters(
                1000,
                &[
                    ("disk.read.bytes|sda", 5000.0),
                    ("disk.write.bytes|sda", 7000.0),
                    ("network.in.bytes|lo", 100.0),
                    ("network.out.bytes|lo", 100.0),
                ]
            )
        );
    }

    #[test]
    fn counters_become_deltas_to_the_previous_report_and_a_reset_gives_none() {
        let report = report(RESOURCE);
        let previous = counters(
            940,
            &[
                ("disk.read.bytes|sda", 4000.0),
                // went down: the disk counter was reset
                ("disk.write.bytes|sda", 9000.0),
                ("network.in.bytes|lo", 40.0),
                ("network.out.bytes|lo", 100.0),
            ],
        );
        let (named, kept) = report_samples(&report, "host:zhouli33", &previous);
        let deltas: Vec<_> = rows(&named)
            .into_iter()
            .filter(|(m, _, _)| m.ends_with(".bytes"))
            .collect();
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            deltas,
            [
                ("disk.read.bytes", some("sda"), 1000.0),
                ("network.in.bytes", some("lo"), 60.0),
                ("network.out.bytes", some("lo"), 0.0),
            ]
        );
        let nic = named
            .iter()
            .find(|n| n.metric == "network.in.bytes")
            .unwrap();
        assert_eq!(nic.resource, Some(("nic".into(), "lo".into())));
        assert_eq!(
            kept.values["disk.write.bytes|sda"], 7000.0,
            "the new baseline"
        );
        assert_eq!(kept.utc, Some(1000));
    }

    #[test]
    fn a_report_not_newer_than_the_previous_gives_no_deltas() {
        let report = report(RESOURCE);
        let previous = counters(1000, &[("disk.read.bytes|sda", 4000.0)]);
        let (named, _) = report_samples(&report, "h", &previous);
        assert!(named.iter().all(|n| !n.metric.ends_with(".bytes")));
    }

    #[test]
    fn a_service_report_gives_one_up_sample_per_unit_and_no_counters() {
        let report = report(
            r#"{"hostname": "h", "ip": "", "utc": 5, "type": "service", "node_uuid": "",
                "data": {"httpd": "not found", "libvirtd": "running"}}"#,
        );
        let previous = counters(1, &[("disk.read.bytes|sda", 1.0)]);
        let (named, kept) = report_samples(&report, "host:h", &previous);
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            rows(&named),
            [
                ("service.up", some("httpd"), 0.0),
                ("service.up", some("libvirtd"), 1.0)
            ]
        );
        assert_eq!(named[1].resource, Some(("unit".into(), "libvirtd".into())));
        assert!(kept.values.is_empty());
        assert_eq!(
            host_attrs(&report, &kept, None),
            json!({"ip": "", "node_uuid": "", "last_report": 5}),
            "a service report leaves the kept counters and the summary alone"
        );
    }

    #[test]
    fn counters_are_kept_in_the_host_attributes_and_read_back() {
        let report = report(RESOURCE);
        let (_, kept) = report_samples(&report, "host:zhouli33", &Counters::default());
        let attrs = host_attrs(&report, &kept, None);
        assert_eq!(attrs["ip"], "172.16.1.33");
        assert_eq!(attrs["node_uuid"], "u-1");
        assert_eq!(attrs["last_report"], 1000);
        assert_eq!(attrs["counters"]["utc"], 1000);
        assert_eq!(attrs["counters"]["network.in.bytes|lo"], json!(100.0));
        assert_eq!(Counters::from_host_attrs(&attrs), kept);
        assert_eq!(Counters::from_host_attrs(&json!({})), Counters::default());
    }

    /// The host entry keeps what the last resource report said (the `nodes` resource's
    /// summary) and which daemon version sent it.
    #[test]
    fn the_host_keeps_a_summary_and_the_daemon_version() {
        let text = RESOURCE.replace(
            "\"disk\": {",
            "\"uptime\": 7200, \"disk\": {\"/data\": {\"type\": 2, \"total\": 300, \"used\": 25, \"utilization\": 8.3}, ",
        );
        let report = report(&text);
        let attrs = host_attrs(
            &report,
            &Counters::default(),
            Some("opsplane-node-daemon/0.3.1\u{7}"),
        );
        assert_eq!(
            attrs["summary"],
            json!({
                "utc": 1000,
                "cpu": {"numbers": 4, "utilization": 20.6},
                "memory": {"total": 1000, "available": 400, "utilization": 60.0},
                "disk": {"mounts": 2, "total": 400, "used": 50, "utilization": 12.5},
                "uptime": 7200,
            })
        );
        assert_eq!(attrs["daemon_version"], "0.3.1");
        assert_eq!(
            attrs["sender"], "opsplane-node-daemon/0.3.1",
            "control characters dropped"
        );
        let other = host_attrs(&report, &Counters::default(), Some("curl/8.0"));
        assert_eq!(other["sender"], "curl/8.0");
        assert!(other.get("daemon_version").is_none());
    }

    #[test]
    fn the_service_interval_is_the_time_since_the_previous_report() {
        let report = report(RESOURCE);
        let attrs = service_attrs(&report, &counters(940, &[]));
        assert_eq!(attrs["check_interval"], 60);
        assert_eq!(attrs["type"], "host");
        assert_eq!(attrs["host"], "zhouli33");
        assert_eq!(
            service_attrs(&report, &counters(970, &[]))["check_interval"],
            30
        );
        assert_eq!(
            service_attrs(&report, &Counters::default())["check_interval"],
            60,
            "no previous report"
        );
        assert_eq!(
            service_attrs(&report, &counters(1000, &[]))["check_interval"],
            60
        );
    }

    #[test]
    fn vm_counts_from_other_senders_become_samples() {
        let text = RESOURCE.replace("\"cpu\":", "\"vm\": {\"numbers\": 3}, \"cpu\":");
        let report = report(&text);
        let (named, _) = report_samples(&report, "h", &Counters::default());
        assert!(rows(&named).contains(&("vm.count", None, 3.0)));
    }

    /// GeoNode's `uptime` host metric reads the report's `uptime`; reports without one (the
    /// seed's own body) give no sample.
    #[test]
    fn uptime_becomes_the_uptime_metric_when_reported() {
        let text = RESOURCE.replace("\"cpu\":", "\"uptime\": 86400, \"cpu\":");
        let with = report(&text);
        let (named, _) = report_samples(&with, "h", &Counters::default());
        assert!(rows(&named).contains(&("uptime", None, 86400.0)));
        let without = report(RESOURCE);
        let (named, _) = report_samples(&without, "h", &Counters::default());
        assert!(!rows(&named).iter().any(|r| r.0 == "uptime"));
    }
}
