//! The store's data model: registry kinds, series keys, samples, bucket aggregates, exception
//! records and retention.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Seconds in a minute bucket.
pub const MINUTE: i64 = 60;
/// Seconds in an hour bucket.
pub const HOUR: i64 = 3600;

/// A registry: things that get stable numeric ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Monitored services (`/monitoring/api/services/`).
    Service,
    /// Hosts (`/monitoring/api/hosts/`).
    Host,
    /// Resources, keyed `"<type>|<name>"` (see [`resource_key`]).
    Resource,
    /// Labels (`/monitoring/api/labels/`).
    Label,
    /// Event types (`/monitoring/api/event_types/`).
    EventType,
    /// Metric names.
    Metric,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::Service,
        Kind::Host,
        Kind::Resource,
        Kind::Label,
        Kind::EventType,
        Kind::Metric,
    ];

    /// A short stable name used in storage keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Host => "host",
            Kind::Resource => "resource",
            Kind::Label => "label",
            Kind::EventType => "event_type",
            Kind::Metric => "metric",
        }
    }

    /// A stable number used in embedded keys.
    pub fn code(self) -> u8 {
        match self {
            Kind::Service => 1,
            Kind::Host => 2,
            Kind::Resource => 3,
            Kind::Label => 4,
            Kind::EventType => 5,
            Kind::Metric => 6,
        }
    }
}

/// The registry name of a resource of `resource_type` called `name`.
pub fn resource_key(resource_type: &str, name: &str) -> String {
    format!("{resource_type}|{name}")
}

/// Splits a resource registry name into `(type, name)`.
pub fn split_resource_key(key: &str) -> (&str, &str) {
    key.split_once('|').unwrap_or(("", key))
}

/// One registry entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEntry {
    /// Stable id, from 1.
    pub id: u32,
    /// Unique name within the kind.
    pub name: String,
    /// Free attributes (a JSON object), e.g. a service's type, host and last_check.
    #[serde(default)]
    pub attrs: serde_json::Value,
}

/// The identity of a series. Id 0 means "none" (no resource, the default label, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SeriesKey {
    /// Metric id.
    pub metric: u32,
    /// Service id.
    pub service: u32,
    /// Resource id, 0 for none.
    pub resource: u32,
    /// Label id.
    pub label: u32,
    /// Event type id, 0 for none.
    pub event_type: u32,
}

impl SeriesKey {
    /// The part of the key below the metric, as stored in a bucket hash field.
    pub fn field(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.service, self.resource, self.label, self.event_type
        )
    }

    /// Parses [`SeriesKey::field`] back, with the metric given.
    pub fn from_field(metric: u32, field: &str) -> Option<SeriesKey> {
        let mut parts = field.split(':').map(|p| p.parse::<u32>().ok());
        let key = SeriesKey {
            metric,
            service: parts.next()??,
            resource: parts.next()??,
            label: parts.next()??,
            event_type: parts.next()??,
        };
        parts.next().is_none().then_some(key)
    }
}

/// One observation: `count` samples with total `value` at `ts` (seconds since the epoch).
/// A request event is `count = 1`; a pre-aggregated counter may carry more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The series.
    pub key: SeriesKey,
    /// When, seconds since the epoch.
    pub ts: i64,
    /// The value (for `count` metrics usually 1).
    pub value: f64,
}

/// An aggregate over a bucket (or several).
///
/// `min`/`max` are over single samples; `minute_min`/`minute_max` over the per-minute sums
/// (what GeoNode reports as min/max of `count` metrics); `metric_count` is how many minute
/// buckets had data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    /// Samples folded in (`samples_count`).
    pub samples: u64,
    /// Sum of sample values.
    pub sum: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Smallest per-minute sum.
    pub minute_min: f64,
    /// Largest per-minute sum.
    pub minute_max: f64,
    /// Minute buckets with data (`metric_count`).
    pub metric_count: u64,
}

impl Agg {
    /// The aggregate of one sample.
    pub fn of(value: f64) -> Agg {
        Agg {
            samples: 1,
            sum: value,
            min: value,
            max: value,
            minute_min: value,
            minute_max: value,
            metric_count: 1,
        }
    }

    /// Folds another sample of the same minute in.
    pub fn add_sample_same_minute(&mut self, value: f64) {
        self.samples += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.minute_min = self.sum;
        self.minute_max = self.sum;
    }

    /// Merges another part of the same minute (e.g. a second batch).
    pub fn merge_same_minute(&mut self, other: &Agg) {
        self.samples += other.samples;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.minute_min = self.sum;
        self.minute_max = self.sum;
        self.metric_count = 1;
    }

    /// Merges an aggregate of other minutes (roll-ups and query intervals).
    pub fn merge(&mut self, other: &Agg) {
        self.samples += other.samples;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.minute_min = self.minute_min.min(other.minute_min);
        self.minute_max = self.minute_max.max(other.minute_max);
        self.metric_count += other.metric_count;
    }

    /// The minute form stored in a minute bucket: `samples,sum,min,max`.
    pub fn encode_minute(&self) -> String {
        format!("{},{},{},{}", self.samples, self.sum, self.min, self.max)
    }

    /// Parses the minute form.
    pub fn decode_minute(text: &str) -> Option<Agg> {
        let mut p = text.split(',');
        let samples = p.next()?.parse().ok()?;
        let sum: f64 = p.next()?.parse().ok()?;
        let min = p.next()?.parse().ok()?;
        let max = p.next()?.parse().ok()?;
        if p.next().is_some() {
            return None;
        }
        Some(Agg {
            samples,
            sum,
            min,
            max,
            minute_min: sum,
            minute_max: sum,
            metric_count: 1,
        })
    }

    /// The hour form: `samples,sum,min,max,minute_min,minute_max,metric_count`.
    pub fn encode_hour(&self) -> String {
        format!(
            "{},{},{},{},{},{},{}",
            self.samples,
            self.sum,
            self.min,
            self.max,
            self.minute_min,
            self.minute_max,
            self.metric_count
        )
    }

    /// Parses the hour form.
    pub fn decode_hour(text: &str) -> Option<Agg> {
        let mut p = text.split(',');
        let agg = Agg {
            samples: p.next()?.parse().ok()?,
            sum: p.next()?.parse().ok()?,
            min: p.next()?.parse().ok()?,
            max: p.next()?.parse().ok()?,
            minute_min: p.next()?.parse().ok()?,
            minute_max: p.next()?.parse().ok()?,
            metric_count: p.next()?.parse().ok()?,
        };
        p.next().is_none().then_some(agg)
    }
}

/// Bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// 1-minute buckets.
    Minute,
    /// 1-hour roll-ups.
    Hour,
}

impl Resolution {
    /// Width in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Resolution::Minute => MINUTE,
            Resolution::Hour => HOUR,
        }
    }
}

/// One stored bucket of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketRow {
    /// Bucket start, seconds since the epoch.
    pub start: i64,
    /// The series.
    pub key: SeriesKey,
    /// Its aggregate.
    pub agg: Agg,
}

/// Which series a bucket query returns; `None` means any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesFilter {
    /// Services.
    pub services: Option<Vec<u32>>,
    /// Resources.
    pub resources: Option<Vec<u32>>,
    /// Labels.
    pub labels: Option<Vec<u32>>,
    /// Event types.
    pub event_types: Option<Vec<u32>>,
}

impl SeriesFilter {
    /// Whether `key` passes.
    pub fn matches(&self, key: &SeriesKey) -> bool {
        fn ok(set: &Option<Vec<u32>>, id: u32) -> bool {
            set.as_ref().is_none_or(|s| s.contains(&id))
        }
        ok(&self.services, key.service)
            && ok(&self.resources, key.resource)
            && ok(&self.labels, key.label)
            && ok(&self.event_types, key.event_type)
    }
}

/// How long buckets and exceptions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Seconds 1-minute buckets are kept.
    pub minutes: i64,
    /// Seconds 1-hour buckets are kept.
    pub hours: i64,
    /// Seconds exception records are kept.
    pub exceptions: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minutes: 2 * 86_400,
            hours: 90 * 86_400,
            exceptions: 30 * 86_400,
        }
    }
}

/// A recorded exception (seed 001 "exceptions"): a failed check or an application error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionRecord {
    /// Id, assigned by the store (0 before).
    #[serde(default)]
    pub id: u64,
    /// Class of the error, e.g. `check.timeout` or `exceptions.ValueError`.
    pub error_type: String,
    /// The message.
    pub error_message: String,
    /// Details, e.g. a stack trace.
    #[serde(default)]
    pub error_data: String,
    /// Service name.
    pub service: String,
    /// Service type.
    pub service_type: String,
    /// When, milliseconds since the epoch.
    pub created_ms: i64,
    /// The request the error belongs to, in the seed's `request` shape (`event_type`, `client`,
    /// `request`, `response`, `resources`).
    #[serde(default)]
    pub request: serde_json::Value,
}

/// Which exceptions a list returns (GeoNode's `/exceptions/` filters); `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExceptionFilter {
    /// Only this `error_type`.
    pub error_type: Option<String>,
    /// Only exceptions of this service.
    pub service: Option<String>,
    /// Only exceptions of services of this type.
    pub service_type: Option<String>,
    /// Only exceptions whose request touched this resource `(type, name)`.
    pub resource: Option<(String, String)>,
}

impl ExceptionFilter {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        *self == ExceptionFilter::default()
    }

    /// Whether `record` passes.
    pub fn matches(&self, record: &ExceptionRecord) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.error_type, &record.error_type)
            && eq(&self.service, &record.service)
            && eq(&self.service_type, &record.service_type)
            && self.resource.as_ref().is_none_or(|(t, n)| {
                record.request["resources"].as_array().is_some_and(|list| {
                    list.iter()
                        .any(|r| r["type"] == t.as_str() && r["name"] == n.as_str())
                })
            })
    }
}

/// Folds samples into per-(series, minute) aggregates, the unit every backend writes.
pub fn fold_minutes(samples: &[Sample]) -> HashMap<(SeriesKey, i64), Agg> {
    let mut out: HashMap<(SeriesKey, i64), Agg> = HashMap::with_capacity(samples.len().min(4096));
    for s in samples {
        let minute = s.ts.div_euclid(MINUTE) * MINUTE;
        out.entry((s.key, minute))
            .and_modify(|a| a.add_sample_same_minute(s.value))
            .or_insert_with(|| Agg::of(s.value));
    }
    out
}

/// The hours `(metric, hour start)` whose roll-up the folded minutes invalidate.
pub fn dirty_hours(
    folded: &HashMap<(SeriesKey, i64), Agg>,
) -> std::collections::BTreeSet<(u32, i64)> {
    folded
        .keys()
        .map(|(key, minute)| (key.metric, minute.div_euclid(HOUR) * HOUR))
        .collect()
}

/// First and last minute each resource and label appears in the folded minutes, per metric
/// and for any metric (metric 0): what a backend merges into its first/last-seen records.
pub fn seen_spans(
    folded: &HashMap<(SeriesKey, i64), Agg>,
) -> HashMap<(Kind, u32, u32), (i64, i64)> {
    let mut out: HashMap<(Kind, u32, u32), (i64, i64)> = HashMap::new();
    for (key, minute) in folded.keys() {
        for (kind, id) in [(Kind::Resource, key.resource), (Kind::Label, key.label)] {
            if id == 0 {
                continue;
            }
            for metric in [key.metric, 0] {
                let e = out.entry((kind, metric, id)).or_insert((*minute, *minute));
                e.0 = e.0.min(*minute);
                e.1 = e.1.max(*minute);
            }
        }
    }
    out
}

/// Checks samples before any backend writes them: finite values, known-looking ids.
/// Largest magnitude of a sample value: far beyond any real measurement (an exabyte, 30
/// years in milliseconds), small enough that sums over any bucket stay finite.
pub const MAX_SAMPLE_VALUE: f64 = 1e18;

/// Checks a batch before it is written: finite values within [`MAX_SAMPLE_VALUE`], a metric,
/// and a time the store keeps — a sample older than the 1-minute buckets' retention (relative
/// to `now`, seconds) is refused rather than acknowledged and dropped at once (Redis would
/// expire it immediately; both backends refuse it alike).
pub fn validate(samples: &[Sample], retention: &Retention, now: i64) -> Result<(), String> {
    let oldest = now - retention.minutes;
    for s in samples {
        if !s.value.is_finite() {
            return Err(format!("sample value {} is not a finite number", s.value));
        }
        if s.value.abs() > MAX_SAMPLE_VALUE {
            return Err(format!(
                "sample value {} is beyond {MAX_SAMPLE_VALUE:e}, more than any real measurement",
                s.value
            ));
        }
        if s.ts >= 0 && s.ts < oldest {
            return Err(format!(
                "sample time {} is older than the retention of 1-minute data ({} s before now): it would not be kept",
                s.ts, retention.minutes
            ));
        }
        if s.key.metric == 0 {
            return Err("sample without a metric".to_string());
        }
        if s.ts < 0 {
            return Err(format!("sample time {} is before 1970", s.ts));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_field_round_trips() {
        let key = SeriesKey {
            metric: 3,
            service: 1,
            resource: 0,
            label: 77,
            event_type: 2,
        };
        assert_eq!(SeriesKey::from_field(3, &key.field()), Some(key));
        assert_eq!(SeriesKey::from_field(3, "1:2:3"), None);
        assert_eq!(SeriesKey::from_field(3, "1:2:3:4:5"), None);
        assert_eq!(SeriesKey::from_field(3, "1:x:3:4"), None);
    }

    #[test]
    fn agg_encodings_round_trip_exactly() {
        let mut a = Agg::of(0.1);
        a.add_sample_same_minute(0.2);
        assert_eq!(Agg::decode_minute(&a.encode_minute()), Some(a));
        let mut h = a;
        h.merge(&Agg::of(7.25));
        assert_eq!(Agg::decode_hour(&h.encode_hour()), Some(h));
        assert_eq!(Agg::decode_minute("1,2,3"), None);
    }

    #[test]
    fn fold_minutes_groups_by_minute_and_series() {
        let key = SeriesKey {
            metric: 1,
            ..Default::default()
        };
        let samples = [
            Sample {
                key,
                ts: 120,
                value: 1.0,
            },
            Sample {
                key,
                ts: 179,
                value: 3.0,
            },
            Sample {
                key,
                ts: 180,
                value: 5.0,
            },
        ];
        let folded = fold_minutes(&samples);
        assert_eq!(folded.len(), 2);
        let first = folded[&(key, 120)];
        assert_eq!(
            (first.samples, first.sum, first.min, first.max),
            (2, 4.0, 1.0, 3.0)
        );
        assert_eq!(folded[&(key, 180)].sum, 5.0);
    }
}
