//! The pure half of seed 001's `metric_data`: time parsing, the window's alignment to the
//! interval counted from 00:00, the choice of stored resolution, and folding stored buckets
//! into the rows of each interval by `group_by`. No I/O: the API fetches buckets from the
//! store and renders what this module returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::catalog::MetricType;
use crate::model::{Agg, BucketRow, HOUR, MINUTE, Resolution};

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// The most intervals one query may return.
pub const MAX_BUCKETS: i64 = 10_000;

/// A query parameter that is wrong, with the parameter's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {reason}")]
pub struct ParamError {
    /// The parameter.
    pub param: &'static str,
    /// What is wrong, for a person.
    pub reason: String,
}

fn bad(param: &'static str, reason: impl Into<String>) -> ParamError {
    ParamError {
        param,
        reason: reason.into(),
    }
}

/// Parses a seed 001 timestamp: a date (`2017-08-03`), or a date and time with `T` or a space
/// (`2017-08-03 10:00:00`, optional fraction), optionally with `Z` or an offset. Times without
/// an offset are UTC. Returns milliseconds since the epoch.
pub fn parse_time(param: &'static str, text: &str) -> Result<i64, ParamError> {
    let t = text.trim();
    let err = || {
        bad(
            param,
            format!("{text:?} is not a date (2017-08-03) or date and time (2017-08-03 10:00:00)"),
        )
    };
    if t.is_empty() || t.len() > 40 {
        return Err(err());
    }
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    let civil = t
        .replacen(' ', "T", 1)
        .parse::<jiff::civil::DateTime>()
        .or_else(|_| {
            t.parse::<jiff::civil::Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })
        .map_err(|_| err())?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|_| err())
}

/// Renders milliseconds since the epoch as seed 001 does: `2017-08-03T10:00:00`, with
/// `.mmm` only when there are milliseconds, in UTC without a suffix.
pub fn format_time(ms: i64) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return ms.to_string();
    };
    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let millis = ms.rem_euclid(1000);
    if millis == 0 {
        base
    } else {
        format!("{base}.{millis:03}")
    }
}

/// The interval used when none is given, GeoNode 4.4.5's (`get_metrics_for`): 60 s, and
/// 3600 s for windows longer than a day.
pub fn default_interval(window_secs: i64) -> i64 {
    if window_secs > DAY { HOUR } else { MINUTE }
}

/// The aligned window of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First interval's start, seconds.
    pub start: i64,
    /// Last interval's end, seconds.
    pub end: i64,
    /// Interval, seconds.
    pub interval: i64,
}

impl Window {
    /// Aligns `[from_ms, to_ms]` to `interval`, counted from 00:00 UTC of the start's day
    /// (seed 001 "时间戳对齐"): 12:04–12:06 at 300 s gives 12:00–12:10, two intervals.
    pub fn align(from_ms: i64, to_ms: i64, interval: i64) -> Result<Window, ParamError> {
        if interval <= 0 {
            return Err(bad("interval", "must be a positive number of seconds"));
        }
        if interval % MINUTE != 0 {
            return Err(bad(
                "interval",
                format!("{interval} is not a multiple of 60 seconds, the collection period"),
            ));
        }
        if from_ms > to_ms {
            return Err(bad("valid_from", "is after valid_to"));
        }
        let from = from_ms.div_euclid(1000);
        let to = to_ms.div_euclid(1000) + i64::from(to_ms.rem_euclid(1000) != 0);
        let midnight = from.div_euclid(DAY) * DAY;
        let start = midnight + (from - midnight).div_euclid(interval) * interval;
        let count = ((to - start) + interval - 1).div_euclid(interval).max(1);
        if count > MAX_BUCKETS {
            return Err(bad(
                "interval",
                format!(
                    "{interval} s gives {count} intervals over this window; at most {MAX_BUCKETS} are allowed, use a larger interval"
                ),
            ));
        }
        Ok(Window {
            start,
            end: start + count * interval,
            interval,
        })
    }

    /// The intervals `[from, to)`.
    pub fn intervals(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        (0..(self.end - self.start) / self.interval).map(|i| {
            let s = self.start + i * self.interval;
            (s, s + self.interval)
        })
    }

    /// The stored resolution that answers this window exactly: hour roll-ups when every
    /// interval is made of whole hours, else minutes.
    pub fn resolution(&self) -> Resolution {
        if self.interval % HOUR == 0 && self.start % HOUR == 0 {
            Resolution::Hour
        } else {
            Resolution::Minute
        }
    }
}

/// `group_by` of seed 001 and GeoNode 4.4.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One row per label (the default).
    Label,
    /// One row per resource and label.
    Resource,
    /// One row per resource (seed 001; GeoNode 4.4.5 refuses it).
    ResourceNoLabel,
    /// One row per resource with the number of distinct labels.
    ResourceOnLabel,
    /// One row per resource with the number of distinct users.
    ResourceOnUser,
    /// One row with the number of distinct resources.
    CountOnResource,
    /// One row with the number of distinct labels.
    DistinctLabels,
    /// One row with the number of distinct users (labels with a user only).
    User,
    /// One row per user with the number of distinct labels.
    UserOnLabel,
    /// One row per event type.
    EventType,
    /// One row per event type with the number of distinct labels.
    EventTypeOnLabel,
    /// One row per event type with the number of distinct users.
    EventTypeOnUser,
}

/// Every accepted `group_by` value, as the error message lists them.
pub const GROUP_BY_VALUES: &str = "resource, resource_no_label, resource_on_label, resource_on_user, count_on_resource, label, user, user_on_label, event_type, event_type_on_label, event_type_on_user";

impl GroupBy {
    /// Parses the parameter (absent = per label).
    pub fn parse(value: Option<&str>) -> Result<GroupBy, ParamError> {
        Ok(match value {
            None | Some("") => GroupBy::Label,
            Some("resource") => GroupBy::Resource,
            Some("resource_no_label") | Some("resource_no_labels") => GroupBy::ResourceNoLabel,
            Some("resource_on_label") => GroupBy::ResourceOnLabel,
            Some("resource_on_user") => GroupBy::ResourceOnUser,
            Some("count_on_resource") => GroupBy::CountOnResource,
            Some("label") => GroupBy::DistinctLabels,
            Some("user") => GroupBy::User,
            Some("user_on_label") => GroupBy::UserOnLabel,
            Some("event_type") => GroupBy::EventType,
            Some("event_type_on_label") => GroupBy::EventTypeOnLabel,
            Some("event_type_on_user") => GroupBy::EventTypeOnUser,
            Some(other) => {
                return Err(bad(
                    "group_by",
                    format!(
                        "Select a valid choice. {other} is not one of the available choices: {GROUP_BY_VALUES}."
                    ),
                ));
            }
        })
    }

    /// Whether rows are per resource (and so only resource-bound samples count).
    pub fn by_resource(self) -> bool {
        matches!(
            self,
            GroupBy::Resource
                | GroupBy::ResourceNoLabel
                | GroupBy::ResourceOnLabel
                | GroupBy::ResourceOnUser
                | GroupBy::CountOnResource
        )
    }

    /// Whether rows are per event type.
    pub fn by_event_type(self) -> bool {
        matches!(
            self,
            GroupBy::EventType | GroupBy::EventTypeOnLabel | GroupBy::EventTypeOnUser
        )
    }

    /// Whether rows need the users of labels.
    pub fn needs_users(self) -> bool {
        matches!(
            self,
            GroupBy::Label
                | GroupBy::Resource
                | GroupBy::ResourceOnUser
                | GroupBy::User
                | GroupBy::UserOnLabel
                | GroupBy::EventTypeOnUser
        )
    }

    fn key(self, row: &BucketRow, user: u32) -> (u32, u32, u32, u32) {
        let k = &row.key;
        match self {
            GroupBy::Label => (0, k.label, 0, 0),
            GroupBy::Resource => (k.resource, k.label, 0, 0),
            GroupBy::ResourceNoLabel | GroupBy::ResourceOnLabel | GroupBy::ResourceOnUser => {
                (k.resource, 0, 0, 0)
            }
            GroupBy::CountOnResource | GroupBy::DistinctLabels | GroupBy::User => (0, 0, 0, 0),
            GroupBy::UserOnLabel => (0, 0, 0, user),
            GroupBy::EventType | GroupBy::EventTypeOnLabel | GroupBy::EventTypeOnUser => {
                (0, 0, k.event_type, 0)
            }
        }
    }
}

/// Which stored samples a query reads, for metrics stored once per request and once per
/// resource ([`crate::catalog::MetricDef::per_request`]): plain per-label totals read each
/// request once, every grouping (as GeoNode's join on resources) only resource-bound samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (metrics stored once per observation).
    All,
    /// Only the resource-less samples: each request once (plain totals).
    Requests,
    /// Only the resource-bound samples (groupings and filters by resource or event type).
    Resources,
}

impl Scope {
    /// The scope of a query of a metric: GeoNode joins resources in every grouping, so only
    /// the default per-label rows without a resource filter read each request once.
    pub fn of(per_request: bool, group_by: GroupBy, resource_filtered: bool) -> Scope {
        if !per_request {
            Scope::All
        } else if resource_filtered || group_by != GroupBy::Label {
            Scope::Resources
        } else {
            Scope::Requests
        }
    }

    /// Whether `row` is read.
    pub fn keeps(self, row: &BucketRow) -> bool {
        match self {
            Scope::All => true,
            Scope::Requests => row.key.resource == 0,
            Scope::Resources => row.key.resource != 0,
        }
    }
}

/// The `val` of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val {
    /// A number, rendered `"10.0000"`.
    Number(f64),
    /// A count of distinct labels, users or resources, rendered as a JSON integer.
    Distinct(u64),
}

impl Val {
    /// The value as a number, to order rows by.
    pub fn as_f64(self) -> f64 {
        match self {
            Val::Number(x) => x,
            Val::Distinct(n) => n as f64,
        }
    }
}

/// The event type of a row of the event-type groupings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventRow {
    /// A stored event type, by id.
    Stored(u32),
    /// One of GeoNode's aggregate event types: `all`, `other`, `OWS:ALL`.
    Aggregate(&'static str),
}

/// One row of an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Resource id (groupings by resource).
    pub resource: Option<u32>,
    /// Label id (default and group_by resource).
    pub label: Option<u32>,
    /// Event type (groupings by event type).
    pub event_type: Option<EventRow>,
    /// User (the id given by [`Fold::users`]): group_by user_on_label.
    pub user: Option<u32>,
    /// The value.
    pub val: Val,
    /// Shown min.
    pub min: f64,
    /// Shown max.
    pub max: f64,
    /// Sum of samples.
    pub sum: f64,
    /// Samples.
    pub samples_count: u64,
    /// Minute buckets used.
    pub metric_count: u64,
}

/// One interval and its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Start, seconds.
    pub from: i64,
    /// End, seconds.
    pub to: i64,
    /// Rows. Per label (no `group_by`): by resource, label and event type id (registration
    /// order, as the seed's request.ua example lists them). Grouped: largest `val` first
    /// (GeoNode's `ORDER BY val DESC`, the order of the seed's group_by examples), equal values
    /// in registration order.
    pub rows: Vec<Row>,
}

/// How [`fold_with`] folds: the metric's aggregation and the grouping, with what the grouping
/// needs to know of labels and event types.
#[derive(Debug, Clone, Copy)]
pub struct Fold<'a> {
    /// Aggregation of `val`.
    pub kind: MetricType,
    /// Whether min/max are over per-minute sums.
    pub minute_extrema: bool,
    /// Whether `resource_no_label` counts distinct labels.
    pub distinct_per_resource: bool,
    /// The grouping.
    pub group_by: GroupBy,
    /// Label id → user id (any numbering; labels without a user are absent).
    pub users: &'a HashMap<u32, u32>,
    /// Event type id → name (for the aggregate rows of the event-type groupings).
    pub event_types: &'a HashMap<u32, String>,
}

/// [`fold_with`] without users or event type names.
pub fn fold(
    buckets: &[BucketRow],
    window: &Window,
    kind: MetricType,
    minute_extrema: bool,
    group_by: GroupBy,
) -> Vec<Interval> {
    let none = HashMap::new();
    let names = HashMap::new();
    fold_with(
        buckets,
        window,
        &Fold {
            kind,
            minute_extrema,
            distinct_per_resource: kind == MetricType::Value,
            group_by,
            users: &none,
            event_types: &names,
        },
    )
}

/// What one group gathers: its aggregate and the distinct labels, users and resources in it.
struct Group {
    agg: Agg,
    labels: BTreeSet<u32>,
    users: BTreeSet<u32>,
    resources: BTreeSet<u32>,
}

impl Group {
    fn new(b: &BucketRow, user: u32) -> Group {
        let mut g = Group {
            agg: b.agg,
            labels: BTreeSet::new(),
            users: BTreeSet::new(),
            resources: BTreeSet::new(),
        };
        g.note(b, user);
        g
    }

    fn add(&mut self, b: &BucketRow, user: u32) {
        self.agg.merge(&b.agg);
        self.note(b, user);
    }

    fn note(&mut self, b: &BucketRow, user: u32) {
        self.labels.insert(b.key.label);
        if user != 0 {
            self.users.insert(user);
        }
        if b.key.resource != 0 {
            self.resources.insert(b.key.resource);
        }
    }
}

/// GeoNode's aggregate event types, as rows of the event-type groupings.
const AGGREGATE_ROWS: [&str; 3] = ["all", "other", "OWS:ALL"];

/// Folds `buckets` (already filtered) into the intervals of `window`, grouped by
/// `how.group_by`, with `val`, `min` and `max` as the metric type wants them. The event-type
/// groupings also give GeoNode's aggregate rows `all` (every event), `other` (every event
/// that is not OWS or machine-made; the stored `other` of untyped events has no row of its
/// own) and `OWS:ALL` (every `OWS:*` event; a row of 0 in every interval with data).
pub fn fold_with(buckets: &[BucketRow], window: &Window, how: &Fold<'_>) -> Vec<Interval> {
    let group_by = how.group_by;
    let user_of = |b: &BucketRow| how.users.get(&b.key.label).copied().unwrap_or(0);
    // (interval start, label, event type, user)) → group.
    type GroupKey = (i64, (u32, u32, EventRow, u32));
    let mut per: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let mut add = |slot: i64, key: (u32, u32, EventRow, u32), b: &BucketRow, user: u32| {
        per.entry((slot, key))
            .and_modify(|g| g.add(b, user))
            .or_insert_with(|| Group::new(b, user));
    };
    let mut slots_with_data = BTreeSet::new();
    for b in buckets {
        if b.start < window.start || b.start >= window.end {
            continue;
        }
        let user = user_of(b);
        if matches!(group_by, GroupBy::User | GroupBy::UserOnLabel) && user == 0 {
            continue;
        }
        let slot =
            window.start + (b.start - window.start).div_euclid(window.interval) * window.interval;
        let (r, l, e, u) = group_by.key(b, user);
        if !group_by.by_event_type() {
            add(slot, (r, l, EventRow::Stored(e), u), b, user);
            continue;
        }
        slots_with_data.insert(slot);
        let name = how.event_types.get(&e).map_or("", String::as_str);
        if !AGGREGATE_ROWS.contains(&name) {
            add(slot, (r, l, EventRow::Stored(e), u), b, user);
        }
        for aggregate in AGGREGATE_ROWS {
            if crate::catalog::event_type(aggregate).is_some_and(|d| d.covers(name)) {
                add(slot, (r, l, EventRow::Aggregate(aggregate), u), b, user);
            }
        }
    }
    fn labels(g: &Group) -> usize {
        g.labels.len()
    }
    fn users(g: &Group) -> usize {
        g.users.len()
    }
    fn resources(g: &Group) -> usize {
        g.resources.len()
    }
    let distinct: Option<fn(&Group) -> usize> = match group_by {
        GroupBy::DistinctLabels
        | GroupBy::EventTypeOnLabel
        | GroupBy::ResourceOnLabel
        | GroupBy::UserOnLabel => Some(labels),
        GroupBy::User | GroupBy::ResourceOnUser | GroupBy::EventTypeOnUser => Some(users),
        GroupBy::CountOnResource => Some(resources),
        GroupBy::ResourceNoLabel if how.distinct_per_resource => Some(labels),
        _ => None,
    };
    let mut out: Vec<Interval> = window
        .intervals()
        .map(|(from, to)| Interval {
            from,
            to,
            rows: Vec::new(),
        })
        .collect();
    for ((slot, (resource, label, event_type, user)), group) in per {
        let index = ((slot - window.start) / window.interval) as usize;
        let Some(interval) = out.get_mut(index) else {
            continue;
        };
        let agg = group.agg;
        let (min, max) = if how.minute_extrema {
            (agg.minute_min, agg.minute_max)
        } else {
            (agg.min, agg.max)
        };
        let val = match distinct {
            Some(count) => Val::Distinct(count(&group) as u64),
            None => Val::Number(match how.kind {
                MetricType::Count => agg.sum,
                MetricType::Value => agg.sum / agg.samples.max(1) as f64,
                MetricType::Rate => agg.sum / window.interval as f64,
            }),
        };
        interval.rows.push(Row {
            resource: matches!(
                group_by,
                GroupBy::Resource
                    | GroupBy::ResourceNoLabel
                    | GroupBy::ResourceOnLabel
                    | GroupBy::ResourceOnUser
            )
            .then_some(resource),
            label: matches!(group_by, GroupBy::Label | GroupBy::Resource).then_some(label),
            event_type: group_by.by_event_type().then_some(event_type),
            user: (group_by == GroupBy::UserOnLabel).then_some(user),
            val,
            min,
            max,
            sum: agg.sum,
            samples_count: agg.samples,
            metric_count: agg.metric_count,
        });
    }
    // GeoNode orders by val, largest first ("most frequently accessed" lists read the rows in
    // order), and so do the seed's group_by examples; its plain request.ua example lists labels
    // as they were registered, which the seed states and plain rows keep. The sort is stable:
    // ties keep the registration order.
    if group_by != GroupBy::Label {
        for interval in out.iter_mut() {
            interval
                .rows
                .sort_by(|a, b| b.val.as_f64().total_cmp(&a.val.as_f64()));
        }
    }
    // GeoNode pushes OWS:ALL for every period with requests, even when none was OWS.
    for interval in out.iter_mut() {
        if slots_with_data.contains(&interval.from)
            && !interval
                .rows
                .iter()
                .any(|r| r.event_type == Some(EventRow::Aggregate("OWS:ALL")))
        {
            interval.rows.push(Row {
                resource: None,
                label: None,
                event_type: Some(EventRow::Aggregate("OWS:ALL")),
                user: None,
                val: if distinct.is_some() {
                    Val::Distinct(0)
                } else {
                    Val::Number(0.0)
                },
                min: 0.0,
                max: 0.0,
                sum: 0.0,
                samples_count: 0,
                metric_count: 0,
            });
        }
    }
    out
}

/// Renders a number as seed 001 does: four decimals in a string.
pub fn format_number(x: f64) -> String {
    format!("{x:.4}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SeriesKey;
    use proptest::prelude::*;

    fn t(s: &str) -> i64 {
        parse_time("valid_from", s).unwrap()
    }

    #[test]
    fn parses_dates_and_date_times_as_utc() {
        assert_eq!(t("2017-08-03"), 1_501_718_400_000);
        assert_eq!(t("2017-08-03 10:00:00"), 1_501_754_400_000);
        assert_eq!(t("2017-08-03T10:00:00"), 1_501_754_400_000);
        assert_eq!(t("2017-08-03T10:00:00Z"), 1_501_754_400_000);
        assert_eq!(t("2017-09-08T13:50:34.024"), 1_504_878_634_024);
        for bad in [
            "",
            "yesterday",
            "2017-13-01",
            "2017-08-03 25:00",
            "1501754400",
        ] {
            let e = parse_time("valid_to", bad).unwrap_err();
            assert_eq!(e.param, "valid_to", "{bad}");
        }
    }

    #[test]
    fn formats_times_like_the_seed() {
        assert_eq!(format_time(1_501_754_400_000), "2017-08-03T10:00:00");
        assert_eq!(format_time(1_504_878_634_024), "2017-09-08T13:50:34.024");
    }

    #[test]
    fn metric_data_aligns_buckets_to_interval_from_midnight() {
        // Seed 001: 12:04 to 12:06 at 5 minutes → 12:00–12:05 and 12:05–12:10.
        let w = Window::align(t("2017-08-03 12:04:00"), t("2017-08-03 12:06:00"), 300).unwrap();
        let iv: Vec<_> = w
            .intervals()
            .map(|(a, b)| (format_time(a * 1000), format_time(b * 1000)))
            .collect();
        assert_eq!(
            iv,
            [
                (
                    "2017-08-03T12:00:00".to_string(),
                    "2017-08-03T12:05:00".to_string()
                ),
                (
                    "2017-08-03T12:05:00".to_string(),
                    "2017-08-03T12:10:00".to_string()
                )
            ]
        );
        // 7 minutes do not divide an hour: counted from midnight (103 × 7 min = 12:01), 12:04 falls in 12:01–12:08.
        let w = Window::align(t("2017-08-03 12:04:00"), t("2017-08-03 12:05:00"), 420).unwrap();
        assert_eq!(format_time(w.start * 1000), "2017-08-03T12:01:00");
    }

    #[test]
    fn rejects_bad_windows_with_the_parameter_named() {
        assert_eq!(Window::align(0, 1000, 0).unwrap_err().param, "interval");
        assert_eq!(Window::align(0, 1000, -60).unwrap_err().param, "interval");
        assert_eq!(Window::align(0, 1000, 90).unwrap_err().param, "interval");
        assert_eq!(
            Window::align(5000, 1000, 60).unwrap_err().param,
            "valid_from"
        );
        assert_eq!(
            Window::align(0, 365 * DAY * 1000, 60).unwrap_err().param,
            "interval"
        );
        assert_eq!(GroupBy::parse(Some("host")).unwrap_err().param, "group_by");
    }

    #[test]
    fn hour_resolution_only_for_whole_hours() {
        let w = Window::align(0, 7 * DAY * 1000, 3600).unwrap();
        assert_eq!(w.resolution(), Resolution::Hour);
        let w = Window::align(0, DAY * 1000, 1800).unwrap();
        assert_eq!(w.resolution(), Resolution::Minute);
    }

    fn row(start: i64, label: u32, value: f64) -> BucketRow {
        BucketRow {
            start,
            key: SeriesKey {
                metric: 1,
                service: 1,
                resource: 0,
                label,
                event_type: 0,
            },
            agg: Agg::of(value),
        }
    }

    #[test]
    fn count_rows_sum_and_take_min_max_of_minutes() {
        let w = Window::align(0, 3600 * 1000, 3600).unwrap();
        let buckets = [
            row(0, 1, 19.0),
            row(60, 1, 79.0),
            row(120, 1, 30.0),
            row(0, 2, 1.0),
        ];
        let out = fold(&buckets, &w, MetricType::Count, true, GroupBy::Label);
        assert_eq!(out.len(), 1);
        let r = &out[0].rows[0];
        assert_eq!(
            (r.label, r.val, r.min, r.max, r.sum, r.metric_count),
            (Some(1), Val::Number(128.0), 19.0, 79.0, 128.0, 3)
        );
        let d = fold(
            &buckets,
            &w,
            MetricType::Count,
            true,
            GroupBy::DistinctLabels,
        );
        assert_eq!(d[0].rows[0].val, Val::Distinct(2));
    }

    #[test]
    fn grouped_rows_come_largest_val_first_and_plain_rows_in_registration_order() {
        let w = Window::align(0, 3600 * 1000, 3600).unwrap();
        // Resources (and labels) registered 1, 2, 3, 4 with 1, 10, 4 and 4 requests.
        let hit = |start: i64, id: u32| {
            let mut b = row(start, id, 1.0);
            b.key.resource = id;
            b
        };
        let mut buckets = vec![hit(0, 1)];
        buckets.extend((0..10).map(|i| hit(i * 60, 2)));
        buckets.extend((0..4).map(|i| hit(i * 60, 3)));
        buckets.extend((0..4).map(|i| hit(i * 60, 4)));
        let order = |group_by| -> Vec<(Option<u32>, Val)> {
            fold(&buckets, &w, MetricType::Count, true, group_by)[0]
                .rows
                .iter()
                .map(|r| (r.resource.or(r.label), r.val))
                .collect()
        };
        assert_eq!(
            order(GroupBy::Resource),
            [
                (Some(2), Val::Number(10.0)),
                (Some(3), Val::Number(4.0)),
                (Some(4), Val::Number(4.0)),
                (Some(1), Val::Number(1.0)),
            ]
        );
        assert_eq!(
            order(GroupBy::Label),
            [
                (Some(1), Val::Number(1.0)),
                (Some(2), Val::Number(10.0)),
                (Some(3), Val::Number(4.0)),
                (Some(4), Val::Number(4.0)),
            ]
        );
    }

    proptest! {
        #[test]
        fn sum_of_buckets_equals_total_for_any_interval(
            points in proptest::collection::vec((0i64..2 * DAY, 1u32..4, 0.0f64..1000.0), 1..200),
            minutes in 1i64..1500,
            offset in 0i64..DAY,
        ) {
            let interval = minutes * 60;
            let buckets: Vec<BucketRow> = points.iter().map(|(ts, l, v)| row(ts / 60 * 60, *l, *v)).collect();
            let w = Window::align(0, 2 * DAY * 1000, interval).unwrap();
            let out = fold(&buckets, &w, MetricType::Count, true, GroupBy::Label);
            let total: f64 = buckets.iter().map(|b| b.agg.sum).sum();
            let folded: f64 = out.iter().flat_map(|i| &i.rows).map(|r| r.sum).sum();
            prop_assert!((total - folded).abs() < 1e-6 * total.max(1.0));
            let samples: u64 = out.iter().flat_map(|i| &i.rows).map(|r| r.samples_count).sum();
            prop_assert_eq!(samples, buckets.len() as u64);
            // Intervals tile the window without gaps, each starting on the grid from midnight.
            let mut expect = w.start;
            for i in &out {
                prop_assert_eq!(i.from, expect);
                expect = i.to;
            }
            prop_assert_eq!(expect, w.end);
            // Any window start: the first interval contains it and starts on the midnight grid.
            let w2 = Window::align(offset * 1000, (offset + 1) * 1000, interval).unwrap();
            prop_assert!(w2.start <= offset && offset < w2.start + interval);
            prop_assert_eq!((w2.start - w2.start.div_euclid(DAY) * DAY) % interval, 0);
        }
    }
}
