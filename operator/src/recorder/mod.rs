//! Turns what opsplane observes into store samples and exception records: node reports
//! (seed 002 §四), MonitoredService check results, and request events posted to the ingestion
//! endpoint. The metric names, types and labels are those of `opsplane_store::catalog`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use opsplane_store::catalog::{self, MetricType};
use opsplane_store::model::resource_key;
use opsplane_store::{ExceptionRecord, Kind, Sample, SeriesKey, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::check::InstanceResult;

/// Records observations into the store. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    store: Arc<dyn Store>,
    /// Registry ids never change, so every replica may cache them forever.
    ids: Arc<RwLock<HashMap<(Kind, String), u32>>>,
    /// Service attributes this process last wrote from events, so a steady stream of events
    /// does not rewrite the same registry entry with every batch.
    event_services: Arc<RwLock<HashMap<String, (String, String)>>>,
}

/// A sample before its names are resolved to ids.
struct Named<'a> {
    metric: &'static str,
    service: Cow<'a, str>,
    resource: Option<(Cow<'a, str>, Cow<'a, str>)>,
    label: Option<Cow<'a, str>>,
    event_type: Option<Cow<'a, str>>,
    ts: i64,
    value: f64,
}

impl Named<'static> {
    /// A host sample of a node report (owned: reports are few and small).
    fn host(
        metric: &'static str,
        service: &str,
        label: Option<&str>,
        resource: Option<(&str, &str)>,
        ts: i64,
        value: Option<f64>,
    ) -> Option<Named<'static>> {
        let value = value.filter(|v| v.is_finite())?;
        Some(Named {
            metric,
            service: Cow::Owned(service.to_string()),
            resource: resource.map(|(t, n)| (Cow::Owned(t.to_string()), Cow::Owned(n.to_string()))),
            label: label.map(|l| Cow::Owned(l.to_string())),
            event_type: Some(Cow::Borrowed("node:report")),
            ts,
            value,
        })
    }
}

/// One request event of the ingestion endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEvent {
    /// Name of the service that handled the request.
    pub service: String,
    /// Its type (default `application`).
    #[serde(default)]
    pub service_type: Option<String>,
    /// Host the service runs on.
    #[serde(default)]
    pub host: Option<String>,
    /// When: RFC 3339 / seed 001 timestamp, or seconds since the epoch; default now.
    #[serde(default)]
    pub time: Option<Value>,
    /// HTTP method.
    #[serde(default)]
    pub method: Option<String>,
    /// Request path.
    #[serde(default)]
    pub path: Option<String>,
    /// Response status code.
    #[serde(default)]
    pub status: Option<u16>,
    /// Response time in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<f64>,
    /// Response size in bytes.
    #[serde(default)]
    pub size: Option<f64>,
    /// Client address.
    #[serde(default)]
    pub ip: Option<String>,
    /// Client user agent.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// User tracking id (`request.users`).
    #[serde(default)]
    pub user: Option<String>,
    /// Event type (seed 001 names such as `view`, `download`; default `other`).
    #[serde(default)]
    pub event_type: Option<String>,
    /// Resources the request touched.
    #[serde(default)]
    pub resources: Vec<ResourceRef>,
    /// An error raised while handling it: becomes an exception record.
    #[serde(default)]
    pub error: Option<ErrorInfo>,
}

/// A resource named by an event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    /// Resource type (`url`, `instance`, ... or your own).
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Resource name.
    pub name: String,
}

/// An application error attached to an event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfo {
    /// Class of the error.
    #[serde(rename = "type")]
    pub error_type: String,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// Details such as a stack trace.
    #[serde(default)]
    pub data: String,
}

/// Why an event batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// An event is malformed; nothing of the batch was written.
    #[error("event {index}: {message}")]
    BadEvent {
        /// Position in the batch, from 0.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn event_time_ms(value: &Option<Value>) -> Result<i64, String> {
    match value {
        None | Some(Value::Null) => Ok(now_ms()),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e11)
            .map(|s| (s * 1000.0) as i64)
            .ok_or_else(|| format!("time: {n} is not seconds since the epoch")),
        Some(Value::String(s)) => {
            opsplane_store::query::parse_time("time", s).map_err(|e| e.reason)
        }
        Some(other) => Err(format!("time: {other} is neither a timestamp nor seconds")),
    }
}

impl Recorder {
    /// A recorder over `store`.
    pub fn new(store: Arc<dyn Store>) -> Recorder {
        Recorder {
            store,
            ids: Default::default(),
            event_services: Default::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The id of an existing entry, without creating it.
    pub async fn existing_id(&self, kind: Kind, name: &str) -> Result<Option<u32>, StoreError> {
        if let Some(id) = self.ids.read().await.get(&(kind, name.to_string())) {
            return Ok(Some(*id));
        }
        let id = self.store.entry(kind, name).await?.map(|e| e.id);
        if let Some(id) = id {
            self.ids.write().await.insert((kind, name.to_string()), id);
        }
        Ok(id)
    }

    async fn write(&self, named: &[Named<'_>]) -> Result<(), StoreError> {
        // Resolve every distinct name once per batch.
        let mut wanted: HashMap<(Kind, String), u32> = HashMap::new();
        for n in named {
            wanted.insert((Kind::Metric, n.metric.to_string()), 0);
            wanted.insert((Kind::Service, n.service.to_string()), 0);
            if let Some((t, r)) = &n.resource {
                wanted.insert((Kind::Resource, resource_key(t, r)), 0);
            }
            let label = n.label.as_deref().unwrap_or_else(|| {
                catalog::default_label(
                    catalog::metric(n.metric).map_or(MetricType::Value, |d| d.kind),
                )
            });
            wanted.insert((Kind::Label, label.to_string()), 0);
            if let Some(e) = &n.event_type {
                wanted.insert((Kind::EventType, e.to_string()), 0);
            }
        }
        {
            let cache = self.ids.read().await;
            for (k, v) in wanted.iter_mut() {
                if let Some(id) = cache.get(k) {
                    *v = *id;
                }
            }
        }
        for kind in Kind::ALL {
            let missing: Vec<String> = wanted
                .iter()
                .filter(|((k, _), id)| *k == kind && **id == 0)
                .map(|((_, n), _)| n.clone())
                .collect();
            if missing.is_empty() {
                continue;
            }
            let refs: Vec<&str> = missing.iter().map(String::as_str).collect();
            let ids = self.store.ids(kind, &refs).await?;
            let mut cache = self.ids.write().await;
            for (name, id) in missing.into_iter().zip(ids) {
                cache.insert((kind, name.clone()), id);
                wanted.insert((kind, name), id);
            }
        }
        let get = |k: Kind, n: &str| wanted.get(&(k, n.to_string())).copied().unwrap_or(0);
        let samples: Vec<Sample> = named
            .iter()
            .map(|n| {
                let kind = catalog::metric(n.metric).map_or(MetricType::Value, |d| d.kind);
                Sample {
                    key: SeriesKey {
                        metric: get(Kind::Metric, n.metric),
                        service: get(Kind::Service, &n.service),
                        resource: n
                            .resource
                            .as_ref()
                            .map_or(0, |(t, r)| get(Kind::Resource, &resource_key(t, r))),
                        label: get(
                            Kind::Label,
                            n.label
                                .as_deref()
                                .unwrap_or_else(|| catalog::default_label(kind)),
                        ),
                        event_type: n
                            .event_type
                            .as_deref()
                            .map_or(0, |e| get(Kind::EventType, e)),
                    },
                    ts: n.ts,
                    value: n.value,
                }
            })
            .collect();
        self.store.ingest(&samples).await
    }

    /// Availability of a checked service over the last 24 hours, in percent: passing instance
    /// checks over all instance checks (`check.up`), from the hour roll-ups and this hour's
    /// minutes. `None` before the first recorded check.
    pub async fn availability(&self, service: &str) -> Result<Option<f64>, StoreError> {
        let (Some(metric), Some(id)) = (
            self.existing_id(Kind::Metric, "check.up").await?,
            self.existing_id(Kind::Service, service).await?,
        ) else {
            return Ok(None);
        };
        let now = now_ms().div_euclid(1000);
        let hour = now.div_euclid(3600) * 3600;
        let filter = opsplane_store::SeriesFilter {
            services: Some(vec![id]),
            ..Default::default()
        };
        let mut rows = self
            .store
            .buckets(
                metric,
                opsplane_store::Resolution::Hour,
                hour - 23 * 3600,
                hour,
                &filter,
            )
            .await?;
        rows.extend(
            self.store
                .buckets(
                    metric,
                    opsplane_store::Resolution::Minute,
                    hour,
                    now + 60,
                    &filter,
                )
                .await?,
        );
        let samples: u64 = rows.iter().map(|r| r.agg.samples).sum();
        let up: f64 = rows.iter().map(|r| r.agg.sum).sum();
        Ok((samples > 0).then(|| 100.0 * up / samples as f64))
    }

    /// Records one round of checks of a MonitoredService: `check.up` and `response.time` per
    /// instance (label and resource = the instance), `response.status` by status code, and an
    /// exception record for every failed instance. Also keeps the service in the registry
    /// (type, host, check_interval, last_check).
    pub async fn checks(
        &self,
        service: &str,
        service_type: &str,
        check_interval_secs: u64,
        probe: &str,
        results: &[InstanceResult],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let ts = now.div_euclid(1000);
        let event_type = format!("check:{probe}");
        let mut named = Vec::new();
        for r in results {
            let status = r.status.map_or("none".to_string(), |s| s.to_string());
            for (metric, label, value) in [
                (
                    "check.up",
                    r.address.clone(),
                    if r.healthy { 1.0 } else { 0.0 },
                ),
                (
                    "response.time",
                    r.address.clone(),
                    r.latency.as_secs_f64() * 1000.0,
                ),
                ("response.status", status, 1.0),
            ] {
                named.push(Named {
                    metric,
                    service: Cow::Borrowed(service),
                    resource: Some((Cow::Borrowed("instance"), Cow::Borrowed(r.address.as_str()))),
                    label: Some(Cow::Owned(label)),
                    event_type: Some(Cow::Borrowed(event_type.as_str())),
                    ts,
                    value,
                });
            }
        }
        self.write(&named).await?;
        self.store
            .upsert(
                Kind::Service,
                service,
                &json!({
                    "type": service_type,
                    "host": results.first().map(|r| host_of(&r.address)).unwrap_or_default(),
                    "check_interval": check_interval_secs,
                    "last_check": opsplane_store::query::format_time(now),
                }),
            )
            .await?;
        for r in results.iter().filter(|r| !r.healthy) {
            let reason = r.error_reason().unwrap_or("unreachable");
            let message = r
                .error
                .clone()
                .unwrap_or_else(|| "check failed".to_string());
            self.store
                .add_exception(&ExceptionRecord {
                    id: 0,
                    error_type: format!("check.{reason}"),
                    error_message: message.clone(),
                    error_data: format!("{probe} check of {} failed: {message}", r.address),
                    service: service.to_string(),
                    service_type: service_type.to_string(),
                    created_ms: now,
                    request: json!({
                        "event_type": event_type,
                        "client": {"ip": null, "user_agent": "opsplane-operator", "user_agent_family": null,
                                   "position": {"lat": null, "lon": null, "country": null, "city": null}},
                        "request": {"path": r.address, "host": host_of(&r.address), "method": probe.to_uppercase(),
                                    "created": opsplane_store::query::format_time(now)},
                        "response": {"status": r.status, "time": (r.latency.as_secs_f64() * 1000.0).round() as i64,
                                     "type": null, "size": null},
                        "resources": [{"type": "instance", "name": r.address}],
                    }),
                })
                .await?;
        }
        Ok(())
    }

    /// Records a node report (seed 002 §四, already validated): host metrics or service states.
    /// Disk and network counters are cumulative in the report; their rates come from the
    /// previous report of the same host, kept in the host's registry entry so every replica
    /// computes the same deltas.
    pub async fn node_report(&self, report: &Value) -> Result<(), StoreError> {
        let hostname = report["hostname"].as_str().unwrap_or_default();
        let ip = report["ip"].as_str().unwrap_or_default();
        let utc = report["utc"].as_i64().unwrap_or_else(|| now_ms() / 1000);
        let data = &report["data"];
        let service = format!("host:{hostname}");
        let mut named: Vec<Named<'static>> = Vec::new();
        let mut counters = serde_json::Map::new();
        let previous = self.host_counters(hostname).await?;
        let prev_utc = previous.get("utc").and_then(Value::as_i64);
        let s = service.as_str();
        match report["type"].as_str() {
            Some("resource") => {
                let cpu = &data["cpu"];
                let mem = &data["memory"];
                for (metric, value) in [
                    ("cpu.usage", cpu["utilization"].as_f64()),
                    ("cpu.count", cpu["numbers"].as_f64()),
                    ("mem.usage", mem["utilization"].as_f64()),
                    ("mem.total", mem["total"].as_f64()),
                    ("mem.available", mem["available"].as_f64()),
                    (
                        "vm.count",
                        data["vm"]["numbers"].as_f64().or(data["vm"].as_f64()),
                    ),
                ] {
                    named.extend(Named::host(metric, s, None, None, utc, value));
                }
                if let Some(disks) = data["disk"].as_object() {
                    for (mount, d) in disks {
                        for (metric, field) in [
                            ("storage.usage", "utilization"),
                            ("storage.used", "used"),
                            ("storage.total", "total"),
                        ] {
                            named.extend(Named::host(
                                metric,
                                s,
                                Some(mount),
                                Some(("mount", mount)),
                                utc,
                                d[field].as_f64(),
                            ));
                        }
                    }
                }
                let counter_sets = [
                    (
                        "diskio",
                        "device",
                        [
                            ("disk.read.bytes", "read_bytes"),
                            ("disk.write.bytes", "write_bytes"),
                        ],
                    ),
                    (
                        "networkio",
                        "nic",
                        [
                            ("network.in.bytes", "bytes_recv"),
                            ("network.out.bytes", "bytes_send"),
                        ],
                    ),
                ];
                for (section, kind, fields) in counter_sets {
                    let Some(devices) = data[section].as_object() else {
                        continue;
                    };
                    for (device, d) in devices {
                        for (metric, field) in fields {
                            let Some(now) = d[field].as_f64() else {
                                continue;
                            };
                            let ckey = format!("{metric}|{device}");
                            let before = previous.get(&ckey).and_then(Value::as_f64);
                            counters.insert(ckey, json!(now));
                            // A counter that went down was reset (reboot, device re-added): no delta.
                            if let (Some(before), Some(p)) = (before, prev_utc)
                                && now >= before
                                && utc > p
                            {
                                named.extend(Named::host(
                                    metric,
                                    s,
                                    Some(device),
                                    Some((kind, device)),
                                    utc,
                                    Some(now - before),
                                ));
                            }
                        }
                    }
                }
            }
            Some("service") => {
                if let Some(units) = data.as_object() {
                    for (unit, state) in units {
                        let up = if state.as_str() == Some("running") {
                            1.0
                        } else {
                            0.0
                        };
                        named.extend(Named::host(
                            "service.up",
                            s,
                            Some(unit),
                            Some(("unit", unit)),
                            utc,
                            Some(up),
                        ));
                    }
                }
            }
            _ => {}
        }
        self.write(&named).await?;
        self.store
            .upsert(
                Kind::Service,
                &service,
                &json!({"type": "host", "host": hostname, "check_interval": report_interval(prev_utc, utc),
                        "last_check": opsplane_store::query::format_time(utc * 1000)}),
            )
            .await?;
        let mut attrs = json!({"ip": ip, "node_uuid": report["node_uuid"], "last_report": utc});
        if !counters.is_empty() {
            counters.insert("utc".into(), json!(utc));
            attrs["counters"] = Value::Object(counters);
        }
        self.store.upsert(Kind::Host, hostname, &attrs).await?;
        Ok(())
    }

    async fn host_counters(
        &self,
        hostname: &str,
    ) -> Result<serde_json::Map<String, Value>, StoreError> {
        Ok(self
            .store
            .entry(Kind::Host, hostname)
            .await?
            .and_then(|e| e.attrs.get("counters").and_then(Value::as_object).cloned())
            .unwrap_or_default())
    }

    /// Records a batch of request events; all or nothing. Returns how many samples and
    /// exceptions were written.
    pub async fn events(&self, events: &[RequestEvent]) -> Result<(usize, usize), RecordError> {
        let mut times = Vec::with_capacity(events.len());
        for (index, e) in events.iter().enumerate() {
            let bad = |message: String| RecordError::BadEvent { index, message };
            if e.service.trim().is_empty() || e.service.len() > 253 {
                return Err(bad(
                    "service: must be a non-empty name of at most 253 characters".into(),
                ));
            }
            if let Some(t) = &e.event_type
                && catalog::event_type(t).is_none_or(|d| d.machine || t == "all")
            {
                return Err(bad(format!(
                    "event_type: {t:?} is not a request event type (see /monitoring/api/event_types/?ows_service=false)"
                )));
            }
            for (field, v) in [("duration_ms", e.duration_ms), ("size", e.size)] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    return Err(bad(format!("{field}: must be a non-negative number")));
                }
            }
            if let Some(s) = e.status
                && !(100..=599).contains(&s)
            {
                return Err(bad(format!("status: {s} is not an HTTP status code")));
            }
            times.push(event_time_ms(&e.time).map_err(bad)?);
        }
        let mut named = Vec::with_capacity(events.len() * 9);
        let mut exceptions = Vec::new();
        for (e, ms) in events.iter().zip(&times) {
            let status = e.status;
            let ts = ms.div_euclid(1000);
            let event_type = e.event_type.as_deref().unwrap_or("other");
            let resources: Vec<Option<(&str, &str)>> = if e.resources.is_empty() {
                vec![None]
            } else {
                e.resources
                    .iter()
                    .map(|r| Some((r.resource_type.as_str(), r.name.as_str())))
                    .collect()
            };
            for resource in resources {
                let mut push = |metric: &'static str, label, value: f64| {
                    named.push(Named {
                        metric,
                        service: Cow::Borrowed(e.service.as_str()),
                        resource: resource.map(|(t, n)| (Cow::Borrowed(t), Cow::Borrowed(n))),
                        label,
                        event_type: Some(Cow::Borrowed(event_type)),
                        ts,
                        value,
                    });
                };
                push("request.count", None, 1.0);
                if let Some(ip) = &e.ip {
                    push("request.ip", Some(Cow::Borrowed(ip.as_str())), 1.0);
                }
                if let Some(ua) = &e.user_agent {
                    push("request.ua", Some(Cow::Borrowed(ua.as_str())), 1.0);
                }
                if let Some(path) = &e.path {
                    push("request.path", Some(Cow::Borrowed(path.as_str())), 1.0);
                }
                if let Some(method) = &e.method {
                    push("request.method", Some(Cow::Borrowed(method.as_str())), 1.0);
                }
                if let Some(user) = &e.user {
                    push("request.users", Some(Cow::Borrowed(user.as_str())), 1.0);
                }
                if let Some(d) = e.duration_ms {
                    push("response.time", None, d);
                }
                if let Some(s) = e.size {
                    push("response.size", None, s);
                }
                if let Some(s) = status {
                    push("response.status", Some(Cow::Owned(s.to_string())), 1.0);
                }
                if e.error.is_some() || e.status.is_some_and(|s| s >= 500) {
                    push("response.error.count", None, 1.0);
                }
            }
            if let Some(err) = &e.error {
                exceptions.push(ExceptionRecord {
                    id: 0,
                    error_type: err.error_type.clone(),
                    error_message: if err.message.is_empty() { err.error_type.clone() } else { err.message.clone() },
                    error_data: err.data.clone(),
                    service: e.service.clone(),
                    service_type: e.service_type.clone().unwrap_or_else(|| "application".into()),
                    created_ms: *ms,
                    request: json!({
                        "event_type": e.event_type,
                        "client": {"ip": e.ip, "user_agent": e.user_agent, "user_agent_family": null,
                                   "position": {"lat": null, "lon": null, "country": null, "city": null}},
                        "request": {"path": e.path, "host": e.host, "method": e.method,
                                    "created": opsplane_store::query::format_time(*ms)},
                        "response": {"status": e.status, "time": e.duration_ms, "type": null, "size": e.size},
                        "resources": e.resources.iter().map(|r| json!({"type": r.resource_type, "name": r.name})).collect::<Vec<_>>(),
                    }),
                });
            }
        }
        let samples = named.len();
        self.write(&named).await?;
        let mut seen_services: HashMap<&str, (&str, Option<&str>)> = HashMap::new();
        for e in events {
            seen_services.insert(
                &e.service,
                (
                    e.service_type.as_deref().unwrap_or("application"),
                    e.host.as_deref(),
                ),
            );
        }
        for (name, (service_type, host)) in seen_services {
            let attrs = (service_type.to_string(), host.unwrap_or("").to_string());
            if self.event_services.read().await.get(name) == Some(&attrs) {
                continue;
            }
            self.store
                .upsert(
                    Kind::Service,
                    name,
                    &json!({"type": service_type, "host": host.unwrap_or("")}),
                )
                .await?;
            if let Some(h) = host.filter(|h| !h.is_empty()) {
                self.store.upsert(Kind::Host, h, &json!({})).await?;
            }
            self.event_services
                .write()
                .await
                .insert(name.to_string(), attrs);
        }
        for x in &exceptions {
            self.store.add_exception(x).await?;
        }
        Ok((samples, exceptions.len()))
    }
}

/// The host part of `host:port`.
fn host_of(address: &str) -> String {
    let a = address
        .split("://")
        .nth(1)
        .unwrap_or(address)
        .split('/')
        .next()
        .unwrap_or_default();
    match a.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
            h.trim_matches(['[', ']']).to_string()
        }
        _ => a.to_string(),
    }
}

fn report_interval(prev: Option<i64>, now: i64) -> i64 {
    prev.map(|p| now - p).filter(|d| *d > 0).unwrap_or(60)
}
