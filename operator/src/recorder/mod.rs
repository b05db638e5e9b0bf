//! Turns what opsplane observes into store samples and exception records: node reports
//! (seed 002 §四), MonitoredService check results, and request events posted to the ingestion
//! endpoint. The metric names, types and labels are those of `opsplane_store::catalog`.
//!
//! Each observation is mapped to [`Named`] samples, registry attributes and exception records
//! by pure functions — [`node_report`](self::node_report), [`checks`](self::checks),
//! [`events`](self::events), each tested on its own — and [`Recorder`] only does the store
//! reads and writes around them: it reads what the mapping needs (a host's kept counters),
//! resolves names to ids and writes.

mod checks;
mod events;
pub mod geoip;
mod node_report;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use opsplane_resources::node_report::NodeReport;
use opsplane_store::catalog::{self, MetricType};
use opsplane_store::model::resource_key;
use opsplane_store::{Kind, Sample, SeriesKey, Store, StoreError};
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::check::InstanceResult;

pub use events::RequestEvent;
pub use node_report::host_service;

/// Records observations into the store. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    store: Arc<dyn Store>,
    /// Registry ids never change (a pruned name that comes back gets a new one), so replicas
    /// cache them; each forgets its cache every hour ([`Recorder::forget_ids`]).
    ids: Arc<RwLock<HashMap<(Kind, String), u32>>>,
    /// Service attributes this process last wrote from events, so a steady stream of events
    /// does not rewrite the same registry entry with every batch.
    event_services: Arc<RwLock<HashMap<String, (String, String)>>>,
    /// The user name this process last wrote for each tracking label.
    label_users: Arc<RwLock<HashMap<String, String>>>,
    /// Where client addresses are looked up when events carry no place of their own.
    geoip: Option<Arc<geoip::GeoIp>>,
    /// Most labels and resources one batch may add to the registries.
    max_new_names: usize,
    /// Most labels one service may bring into the registry.
    max_labels_per_service: usize,
    /// How many labels each service brought into the registry (their entries' `service`
    /// attribute), as this process last counted them: `None` until first needed. An estimate
    /// only for letting batches through; a refusal is always confirmed against the store.
    service_labels: Arc<RwLock<Option<HashMap<String, usize>>>>,
}

/// Default of [`Recorder::with_max_new_names`].
pub const DEFAULT_MAX_NEW_NAMES: usize = 5000;
/// Default of [`Recorder::with_max_labels_per_service`].
pub const DEFAULT_MAX_LABELS_PER_SERVICE: usize = 20_000;

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

impl Named<'_> {
    /// The sample's label: its own, or its metric kind's default.
    fn label_name(&self) -> &str {
        self.label.as_deref().unwrap_or_else(|| {
            catalog::default_label(
                catalog::metric(self.metric).map_or(MetricType::Value, |d| d.kind),
            )
        })
    }
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

/// The request an exception record belongs to, in the seed 001 exception's `request` shape;
/// both failed checks and request events with an error fill it.
struct FailedRequest<'a> {
    event_type: Option<&'a str>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    path: Option<&'a str>,
    host: Option<&'a str>,
    method: Option<&'a str>,
    created_ms: i64,
    status: Option<u16>,
    /// Response time in milliseconds, as the observation has it (an event's as sent, a
    /// check's rounded to an integer).
    time: Value,
    size: Option<f64>,
    /// `(type, name)` of the resources the request touched.
    resources: Vec<(&'a str, &'a str)>,
}

impl FailedRequest<'_> {
    fn to_json(&self) -> Value {
        json!({
            "event_type": self.event_type,
            "client": {"ip": self.ip, "user_agent": self.user_agent,
                       "user_agent_family": self.user_agent.and_then(events::ua_family),
                       "position": {"lat": null, "lon": null, "country": null, "city": null}},
            "request": {"path": self.path, "host": self.host, "method": self.method,
                        "created": opsplane_store::query::format_time(self.created_ms)},
            "response": {"status": self.status, "time": self.time, "type": null, "size": self.size},
            "resources": self.resources.iter()
                .map(|(kind, name)| json!({"type": kind, "name": name}))
                .collect::<Vec<_>>(),
        })
    }
}

impl Recorder {
    /// A recorder over `store`.
    pub fn new(store: Arc<dyn Store>) -> Recorder {
        Recorder {
            store,
            ids: Default::default(),
            event_services: Default::default(),
            label_users: Default::default(),
            geoip: None,
            max_new_names: DEFAULT_MAX_NEW_NAMES,
            max_labels_per_service: DEFAULT_MAX_LABELS_PER_SERVICE,
            service_labels: Default::default(),
        }
    }

    /// The same recorder, refusing a batch that would make a service's labels in the
    /// registry (those its events brought in) more than `max`.
    pub fn with_max_labels_per_service(mut self, max: usize) -> Recorder {
        self.max_labels_per_service = max;
        self
    }

    /// The same recorder, refusing a batch that would add more than `max` labels and
    /// resources to the registries (they are kept for good and listed by `/labels/`).
    pub fn with_max_new_names(mut self, max: usize) -> Recorder {
        self.max_new_names = max;
        self
    }

    /// The same recorder, looking client addresses up in `geoip`.
    pub fn with_geoip(mut self, geoip: Arc<geoip::GeoIp>) -> Recorder {
        self.geoip = Some(geoip);
        self
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
            wanted.insert((Kind::Label, n.label_name().to_string()), 0);
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
        self.check_new_names(&wanted).await?;
        // Uncached labels by the service they would be marked with: the first of the batch
        // that names each (looked for only when the cache lacks a label, not per sample).
        let mut new_labels: HashMap<&str, Vec<String>> = HashMap::new();
        if wanted
            .iter()
            .any(|((k, _), id)| *k == Kind::Label && *id == 0)
        {
            let mut placed = std::collections::HashSet::new();
            for n in named {
                let key = (Kind::Label, n.label_name().to_string());
                if wanted.get(&key) == Some(&0) && placed.insert(key.1.clone()) {
                    new_labels.entry(&n.service).or_default().push(key.1);
                }
            }
        }
        self.check_service_labels(&new_labels).await?;
        for kind in Kind::ALL {
            if kind == Kind::Label {
                continue;
            }
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
        for (service, missing) in new_labels {
            let refs: Vec<&str> = missing.iter().map(String::as_str).collect();
            let ids = self
                .store
                .ids_with(Kind::Label, &refs, Some(&json!({ "service": service })))
                .await?;
            if let Some(counts) = self.service_labels.write().await.as_mut() {
                // Some may have been known to the store already: an over-estimate, which a
                // refusal corrects by counting again.
                *counts.entry(service.to_string()).or_default() += missing.len();
            }
            let mut cache = self.ids.write().await;
            for (name, id) in missing.into_iter().zip(ids) {
                cache.insert((Kind::Label, name.clone()), id);
                wanted.insert((Kind::Label, name), id);
            }
        }
        let get = |k: Kind, n: &str| wanted.get(&(k, n.to_string())).copied().unwrap_or(0);
        let samples: Vec<Sample> = named
            .iter()
            .map(|n| Sample {
                key: SeriesKey {
                    metric: get(Kind::Metric, n.metric),
                    service: get(Kind::Service, &n.service),
                    resource: n
                        .resource
                        .as_ref()
                        .map_or(0, |(t, r)| get(Kind::Resource, &resource_key(t, r))),
                    label: get(Kind::Label, n.label_name()),
                    event_type: n
                        .event_type
                        .as_deref()
                        .map_or(0, |e| get(Kind::EventType, e)),
                },
                ts: n.ts,
                value: n.value,
            })
            .collect();
        self.store.ingest(&samples).await
    }

    /// Forgets the registry ids and per-service label counts this process cached (they are
    /// looked up again when used).
    pub async fn forget_ids(&self) {
        self.ids.write().await.clear();
        *self.service_labels.write().await = None;
    }

    /// Removes the labels and resources no data of which is kept any more: not seen by any
    /// metric within the 1-hour buckets' retention (plus a day), relative to `now` (seconds).
    /// Returns how many entries went. A name that comes back is registered again (a new id).
    pub async fn prune_registry(&self, now: i64) -> Result<usize, StoreError> {
        let keep_from = now - self.store.retention().hours - 86_400;
        let mut removed = 0;
        for kind in [Kind::Label, Kind::Resource] {
            let alive: std::collections::HashSet<u32> = self
                .store
                .seen(kind, None, Some(keep_from), None)
                .await?
                .into_iter()
                .collect();
            let stale: Vec<String> = self
                .store
                .entries(kind)
                .await?
                .into_iter()
                .filter(|e| !alive.contains(&e.id))
                .map(|e| e.name)
                .collect();
            if stale.is_empty() {
                continue;
            }
            let names: Vec<&str> = stale.iter().map(String::as_str).collect();
            removed += self.store.remove(kind, &names).await?;
            let mut cache = self.ids.write().await;
            for name in stale {
                cache.remove(&(kind, name));
            }
        }
        if removed > 0 {
            *self.service_labels.write().await = None;
        }
        Ok(removed)
    }

    /// Refuses a batch whose labels and resources the registries do not know yet are more
    /// than `max_new_names` (`wanted`: every name of the batch, 0 where the cache has no id).
    async fn check_new_names(
        &self,
        wanted: &HashMap<(Kind, String), u32>,
    ) -> Result<(), StoreError> {
        let named = |kind: Kind| matches!(kind, Kind::Label | Kind::Resource);
        let uncached = wanted
            .iter()
            .filter(|((k, _), id)| named(*k) && **id == 0)
            .count();
        if uncached <= self.max_new_names {
            return Ok(());
        }
        // The cache may just be cold (after a start): count what the store does not know.
        let mut new = 0;
        for kind in [Kind::Label, Kind::Resource] {
            let known: std::collections::HashSet<String> = self
                .store
                .entries(kind)
                .await?
                .into_iter()
                .map(|e| e.name)
                .collect();
            new += wanted
                .iter()
                .filter(|((k, n), id)| *k == kind && **id == 0 && !known.contains(n))
                .count();
        }
        if new > self.max_new_names {
            return Err(StoreError::Invalid(format!(
                "the batch would add {new} new labels and resources; at most {} may come in one request (--max-new-labels): split it",
                self.max_new_names
            )));
        }
        Ok(())
    }

    /// Refuses a batch that would give a service more labels in the registry than
    /// `max_labels_per_service` (`new`: the batch's uncached labels by the service they would
    /// be marked with). Counted from the store when this process has no count yet, and again
    /// before refusing, so labels the store knows already and other replicas' additions are
    /// right.
    async fn check_service_labels(
        &self,
        new: &HashMap<&str, Vec<String>>,
    ) -> Result<(), StoreError> {
        if new.is_empty() || self.max_labels_per_service == 0 {
            return Ok(());
        }
        let over = |counts: &HashMap<String, usize>| {
            new.iter()
                .find(|(service, labels)| {
                    counts.get(**service).copied().unwrap_or(0) + labels.len()
                        > self.max_labels_per_service
                })
                .map(|(service, _)| service.to_string())
        };
        if let Some(counts) = self.service_labels.read().await.as_ref()
            && over(counts).is_none()
        {
            return Ok(());
        }
        let entries = self.store.entries(Kind::Label).await?;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for e in &entries {
            if let Some(service) = e.attrs.get("service").and_then(Value::as_str) {
                *counts.entry(service.to_string()).or_default() += 1;
            }
        }
        let known: std::collections::HashSet<&str> =
            entries.iter().map(|e| e.name.as_str()).collect();
        let refused = new.iter().find_map(|(service, labels)| {
            let have = counts.get(*service).copied().unwrap_or(0);
            let adding = labels
                .iter()
                .filter(|l| !known.contains(l.as_str()))
                .count();
            (have + adding > self.max_labels_per_service).then_some((service, have, adding))
        });
        *self.service_labels.write().await = Some(counts);
        match refused {
            Some((service, have, adding)) => Err(StoreError::Invalid(format!(
                "service {service:?} has {have} labels and the batch would add {adding}; at most {} per service (--max-labels-per-service)",
                self.max_labels_per_service
            ))),
            None => Ok(()),
        }
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

    /// Records one round of checks of a MonitoredService (see [`checks`](self::checks)) and
    /// keeps the service in the registry (type, host, check_interval, last_check).
    pub async fn checks(
        &self,
        service: &str,
        service_type: &str,
        check_interval_secs: u64,
        probe: &str,
        results: &[InstanceResult],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let event_type = format!("check:{probe}");
        let named = checks::check_samples(service, &event_type, results, now.div_euclid(1000));
        self.write(&named).await?;
        let attrs = checks::check_service_attrs(service_type, check_interval_secs, results, now);
        self.store.upsert(Kind::Service, service, &attrs).await?;
        for x in checks::check_exceptions(service, service_type, probe, results, now) {
            self.store.add_exception(&x).await?;
        }
        Ok(())
    }

    /// Records a node report (see [`node_report`](self::node_report)): host metrics or service
    /// states of the service `host:<hostname>`, the registry entries of that service and of
    /// the host, and the host's counters for the next report's deltas. `sender` is the
    /// sender's `User-Agent` (kept with the host: the daemon's version).
    pub async fn node_report(
        &self,
        report: &NodeReport,
        sender: Option<&str>,
    ) -> Result<(), StoreError> {
        let previous = self
            .store
            .entry(Kind::Host, &report.hostname)
            .await?
            .map(|e| node_report::Counters::from_host_attrs(&e.attrs))
            .unwrap_or_default();
        let service = node_report::host_service(&report.hostname);
        let (named, counters) = node_report::report_samples(report, &service, &previous);
        self.write(&named).await?;
        let service_attrs = node_report::service_attrs(report, &previous);
        self.store
            .upsert(Kind::Service, &service, &service_attrs)
            .await?;
        let host_attrs = node_report::host_attrs(report, &counters, sender);
        self.store
            .upsert(Kind::Host, &report.hostname, &host_attrs)
            .await?;
        Ok(())
    }

    /// Records a batch of request events (see [`events`](self::events)); all or nothing.
    /// Returns how many samples and exceptions were written.
    pub async fn events(&self, events: &[RequestEvent]) -> Result<(usize, usize), RecordError> {
        let times = events::event_times(events)?;
        // What the store would drop at once is refused with the event named, not acknowledged.
        let keep = self.store.retention().minutes;
        let oldest_ms = (now_ms() / 1000 - keep) * 1000;
        if let Some(index) = times.iter().position(|t| *t < oldest_ms) {
            return Err(RecordError::BadEvent {
                index,
                message: format!(
                    "time: {} is older than the store keeps 1-minute data (the last {}, --retention-minutes): it would not be recorded",
                    times[index] / 1000,
                    humantime::format_duration(std::time::Duration::from_secs(keep as u64))
                ),
            });
        }
        let mut places = events::event_places(events);
        if let Some(geoip) = &self.geoip {
            for (place, e) in places.iter_mut().zip(events) {
                if place.country.is_none()
                    && let Some(found) = e.ip.as_deref().and_then(|ip| geoip.place(ip))
                {
                    *place = found;
                }
            }
        }
        let named = events::event_samples(events, &times, &places);
        let exceptions = events::event_exceptions(events, &times);
        self.write(&named).await?;
        for (label, username) in events::event_users(events) {
            if self.label_users.read().await.get(label).map(String::as_str) == Some(username) {
                continue;
            }
            self.store
                .upsert(Kind::Label, label, &json!({"user": username}))
                .await?;
            self.label_users
                .write()
                .await
                .insert(label.to_string(), username.to_string());
        }
        for (name, (service_type, host)) in events::event_services(events) {
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
        Ok((named.len(), exceptions.len()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn events(users: &[&str]) -> Vec<RequestEvent> {
        users
            .iter()
            .map(|u| serde_json::from_value(json!({"service": "shop", "user": u})).unwrap())
            .collect()
    }

    /// A batch may add at most `max_new_names` labels and resources (issue 16, 8): beyond, it
    /// is refused whole; names the store knows already do not count, even with a cold cache.
    #[tokio::test]
    async fn a_batch_adding_too_many_labels_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            opsplane_store::embedded::EmbeddedStore::open(
                &dir.path().join("store.redb"),
                opsplane_store::Retention::default(),
            )
            .unwrap(),
        );
        // Each event also names the service's default label `count` etc.: a first batch of
        // known shape registers those.
        let recorder = Recorder::new(store.clone()).with_max_new_names(8);
        recorder.events(&events(&["u0"])).await.unwrap();
        let before = store.entries(Kind::Label).await.unwrap().len();
        let many: Vec<String> = (1..=9).map(|i| format!("u{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = recorder.events(&events(&many)).await.unwrap_err();
        assert!(
            matches!(&err, RecordError::Store(StoreError::Invalid(m)) if m.contains("--max-new-labels")),
            "{err}"
        );
        assert_eq!(
            store.entries(Kind::Label).await.unwrap().len(),
            before,
            "nothing of the refused batch was registered"
        );
        recorder.events(&events(&many[..8])).await.unwrap();
        // A new process (cold cache): the eight known ones and one new one pass.
        let fresh = Recorder::new(store.clone()).with_max_new_names(8);
        fresh.events(&events(&many)).await.unwrap();
    }

    fn events_of(service: &str, users: &[String]) -> Vec<RequestEvent> {
        users
            .iter()
            .map(|u| serde_json::from_value(json!({"service": service, "user": u})).unwrap())
            .collect()
    }

    /// A service may bring at most `max_labels_per_service` labels into the registry (issue
    /// 16, 8): a batch beyond is refused whole, naming the service and the flag; other services
    /// keep their own room; labels the store knows already do not count, and a new process (no
    /// counts yet) counts from the store.
    #[tokio::test]
    async fn a_service_with_too_many_labels_is_refused_and_others_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            opsplane_store::embedded::EmbeddedStore::open(
                &dir.path().join("store.redb"),
                opsplane_store::Retention::default(),
            )
            .unwrap(),
        );
        let users =
            |from: usize, to: usize| (from..to).map(|i| format!("u{i}")).collect::<Vec<_>>();
        let recorder = Recorder::new(store.clone()).with_max_labels_per_service(20);
        recorder
            .events(&events_of("shop", &users(0, 5)))
            .await
            .unwrap();
        let shop_labels = |entries: &[opsplane_store::RegistryEntry]| {
            entries
                .iter()
                .filter(|e| e.attrs.get("service") == Some(&json!("shop")))
                .count()
        };
        let had = shop_labels(&store.entries(Kind::Label).await.unwrap());
        assert!(had >= 5, "each new label is marked with its service: {had}");
        let room = 20 - had;
        let err = recorder
            .events(&events_of("shop", &users(5, 5 + room + 1)))
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("\"shop\"") && message.contains("--max-labels-per-service"),
            "{message}"
        );
        assert_eq!(
            shop_labels(&store.entries(Kind::Label).await.unwrap()),
            had,
            "nothing of the refused batch was registered"
        );
        // Up to the limit passes; another service has its own room.
        recorder
            .events(&events_of("shop", &users(5, 5 + room)))
            .await
            .unwrap();
        recorder
            .events(&events_of("maps", &users(100, 110)))
            .await
            .unwrap();
        // A new process counts from the store: known labels pass, one more does not.
        let fresh = Recorder::new(store.clone()).with_max_labels_per_service(20);
        fresh
            .events(&events_of("shop", &users(0, 5 + room)))
            .await
            .unwrap();
        assert!(
            fresh
                .events(&events_of("shop", &users(900, 901)))
                .await
                .is_err()
        );
        // No limit with 0.
        let open = Recorder::new(store.clone()).with_max_labels_per_service(0);
        open.events(&events_of("shop", &users(900, 930)))
            .await
            .unwrap();
    }

    /// Labels and resources whose data is all gone leave the registries (issue 16, 8: the
    /// registry was never pruned); what still has data stays, and a name that comes back is
    /// registered again and recorded.
    #[tokio::test]
    async fn labels_without_data_are_pruned_and_come_back_when_used() {
        let dir = tempfile::tempdir().unwrap();
        let retention = opsplane_store::Retention {
            minutes: 3_600,
            hours: 7_200,
            exceptions: 3_600,
        };
        let store: Arc<dyn Store> = Arc::new(
            opsplane_store::embedded::EmbeddedStore::open(&dir.path().join("s.redb"), retention)
                .unwrap(),
        );
        let recorder = Recorder::new(store.clone());
        let with_resource: RequestEvent = serde_json::from_value(
            json!({"service": "shop", "user": "alice", "resources": [{"type": "url", "name": "/a"}]}),
        )
        .unwrap();
        recorder
            .events(std::slice::from_ref(&with_resource))
            .await
            .unwrap();
        let names = |kind| {
            let store = store.clone();
            async move {
                store
                    .entries(kind)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.name)
                    .collect::<Vec<_>>()
            }
        };
        assert!(names(Kind::Label).await.contains(&"alice".to_string()));
        let now = jiff::Timestamp::now().as_second();
        assert_eq!(
            recorder.prune_registry(now).await.unwrap(),
            0,
            "all have data"
        );
        // Past the hour buckets' retention (and the day of margin) nothing has data any more.
        let later = now + 7_200 + 86_400 + 60;
        assert!(recorder.prune_registry(later).await.unwrap() >= 2);
        assert!(!names(Kind::Label).await.contains(&"alice".to_string()));
        assert!(names(Kind::Resource).await.is_empty());
        // Used again: registered again, with its data.
        recorder.events(&[with_resource]).await.unwrap();
        assert!(names(Kind::Label).await.contains(&"alice".to_string()));
        assert_eq!(names(Kind::Resource).await.len(), 1);
    }
}
