//! The pure half of seed 001's `metric_data`: time parsing, the window's alignment to the
//! interval counted from 00:00, the choice of stored resolution, and folding stored buckets
//! into the rows of each interval by `group_by`. No I/O: the API fetches buckets from the
//! store and renders what this module returns.

use std::collections::{BTreeMap, BTreeSet};

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

/// The interval used when none is given: 60 s for windows up to a day (seed 001), coarser
/// beyond so that a query stays within a few hundred points.
pub fn default_interval(window_secs: i64) -> i64 {
    match window_secs {
        w if w <= DAY => MINUTE,
        w if w <= 7 * DAY => HOUR,
        w if w <= 31 * DAY => 6 * HOUR,
        _ => DAY,
    }
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

/// `group_by` of seed 001.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One row per label (the default).
    Label,
    /// One row per resource and label.
    Resource,
    /// One row per resource.
    ResourceNoLabel,
    /// One row with the number of distinct labels.
    DistinctLabels,
    /// One row per event type.
    EventType,
    /// One row per event type with the number of distinct labels.
    EventTypeOnLabel,
}

impl GroupBy {
    /// Parses the parameter (absent = per label).
    pub fn parse(value: Option<&str>) -> Result<GroupBy, ParamError> {
        Ok(match value {
            None | Some("") => GroupBy::Label,
            Some("resource") => GroupBy::Resource,
            Some("resource_no_label") | Some("resource_no_labels") => GroupBy::ResourceNoLabel,
            Some("label") => GroupBy::DistinctLabels,
            Some("event_type") => GroupBy::EventType,
            Some("event_type_on_label") => GroupBy::EventTypeOnLabel,
            Some(other) => {
                return Err(bad(
                    "group_by",
                    format!(
                        "{other:?} is not one of resource, resource_no_label, label, event_type, event_type_on_label"
                    ),
                ));
            }
        })
    }

    fn key(self, row: &BucketRow) -> (u32, u32, u32) {
        match self {
            GroupBy::Label => (0, row.key.label, 0),
            GroupBy::Resource => (row.key.resource, row.key.label, 0),
            GroupBy::ResourceNoLabel => (row.key.resource, 0, 0),
            GroupBy::DistinctLabels => (0, 0, 0),
            GroupBy::EventType => (0, 0, row.key.event_type),
            GroupBy::EventTypeOnLabel => (0, 0, row.key.event_type),
        }
    }
}

/// The `val` of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val {
    /// A number, rendered `"10.0000"`.
    Number(f64),
    /// A count of distinct labels, rendered as a JSON integer.
    Distinct(u64),
}

/// One row of an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Resource id (group_by resource / resource_no_label).
    pub resource: Option<u32>,
    /// Label id (default and group_by resource).
    pub label: Option<u32>,
    /// Event type id (group_by event_type / event_type_on_label).
    pub event_type: Option<u32>,
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
    /// Rows, ordered by resource, label and event type id (registration order).
    pub rows: Vec<Row>,
}

/// Folds `buckets` (already filtered) into the intervals of `window`, grouped by `group_by`,
/// with `val`, `min` and `max` as the metric type wants them.
pub fn fold(
    buckets: &[BucketRow],
    window: &Window,
    kind: MetricType,
    minute_extrema: bool,
    group_by: GroupBy,
) -> Vec<Interval> {
    // (interval start, group key) → (aggregate, labels seen).
    type Groups = BTreeMap<(i64, (u32, u32, u32)), (Agg, BTreeSet<u32>)>;
    let mut per: Groups = BTreeMap::new();
    for b in buckets {
        if b.start < window.start || b.start >= window.end {
            continue;
        }
        let slot =
            window.start + (b.start - window.start).div_euclid(window.interval) * window.interval;
        per.entry((slot, group_by.key(b)))
            .and_modify(|(a, labels)| {
                a.merge(&b.agg);
                labels.insert(b.key.label);
            })
            .or_insert_with(|| (b.agg, BTreeSet::from([b.key.label])));
    }
    let distinct = matches!(
        group_by,
        GroupBy::DistinctLabels | GroupBy::EventTypeOnLabel
    ) || (group_by == GroupBy::ResourceNoLabel && kind == MetricType::Value);
    let mut out: Vec<Interval> = window
        .intervals()
        .map(|(from, to)| Interval {
            from,
            to,
            rows: Vec::new(),
        })
        .collect();
    for ((slot, (resource, label, event_type)), (agg, labels)) in per {
        let index = ((slot - window.start) / window.interval) as usize;
        let Some(interval) = out.get_mut(index) else {
            continue;
        };
        let (min, max) = if minute_extrema {
            (agg.minute_min, agg.minute_max)
        } else {
            (agg.min, agg.max)
        };
        let val = if distinct {
            Val::Distinct(labels.len() as u64)
        } else {
            Val::Number(match kind {
                MetricType::Count => agg.sum,
                MetricType::Value => agg.sum / agg.samples.max(1) as f64,
                MetricType::Rate => agg.sum / window.interval as f64,
            })
        };
        interval.rows.push(Row {
            resource: matches!(group_by, GroupBy::Resource | GroupBy::ResourceNoLabel)
                .then_some(resource),
            label: matches!(group_by, GroupBy::Label | GroupBy::Resource).then_some(label),
            event_type: matches!(group_by, GroupBy::EventType | GroupBy::EventTypeOnLabel)
                .then_some(event_type),
            val,
            min,
            max,
            sum: agg.sum,
            samples_count: agg.samples,
            metric_count: agg.metric_count,
        });
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
