//! UtilMeta's metric frames (seed 000; `ServersAPI.BaseQuery` and `convert_data_frame`,
//! reference/utilmeta-ops.md §4 "Servers / metrics"), without I/O: the common parameters
//! parsed and checked ([`FrameQuery`]), and stored buckets turned into a column frame
//! `{col: [v, ...]}` of the newest `limit` rows in ascending time ([`frame`]).
//!
//! A row is one stored bucket of the store's series: a minute bucket (UtilMeta's layer 0, the
//! worker cycle's row) or an hour roll-up (layer 1). `sample_interval` folds rows into wider
//! buckets aligned to the epoch, summing counts and averaging gauges by their samples
//! (UtilMeta sums `requests` and the traffic and averages the rest, too).

use std::collections::{BTreeMap, HashMap};

use opsplane_store::{Agg, Resolution, Retention};
use serde_json::{Value, json};

use super::OpsError;

/// Most rows a frame has, and the default (UtilMeta's `limit`: default 1000, 0..1000).
pub const MAX_LIMIT: usize = 1000;

/// The common parameters of the metric endpoints, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameQuery {
    /// Rows start at or after this (seconds).
    pub from: i64,
    /// Rows start before this (seconds).
    pub to: i64,
    /// Which stored buckets are the rows.
    pub resolution: Resolution,
    /// Most rows, the newest.
    pub limit: usize,
    /// Rows folded into buckets of this many seconds, when asked.
    pub sample: Option<i64>,
}

/// A 400 naming the parameter, in UtilMeta's words.
pub fn bad(name: &str, why: &str) -> OpsError {
    OpsError::BadRequest(format!("parse item: ['query'] failed: {name}: {why}"))
}

/// A required parameter (the first of `names` given), or UtilMeta's 400 for its absence.
pub fn required<'a>(q: &'a HashMap<String, String>, names: &[&str]) -> Result<&'a str, OpsError> {
    names
        .iter()
        .find_map(|n| q.get(*n))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            OpsError::BadRequest(format!(
                "parse item: ['query'] failed: required item: '{}' is absence",
                names[0]
            ))
        })
}

fn integer(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, OpsError> {
    q.get(name)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| bad(name, "not an integer"))
        })
        .transpose()
}

/// A datetime parameter: ISO-8601 with an offset (`2026-12-02T07:00:00+00:00`, `...Z`),
/// without one (read as UTC, as UtilMeta's naive datetimes are), or epoch seconds.
pub fn datetime(name: &str, text: &str) -> Result<i64, OpsError> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return if seconds.is_finite() && seconds.abs() < 1e11 {
            Ok(seconds.floor() as i64)
        } else {
            Err(bad(name, "not a datetime"))
        };
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    text.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp().as_second())
        .ok_or_else(|| bad(name, "not a datetime (ISO-8601 or epoch seconds)"))
}

impl FrameQuery {
    /// Parses `start`, `end` (datetimes), `within_hours`, `within_days` (positive integers),
    /// `limit` (0..1000, default 1000), `layer` (0: minute rows, 1: hour rows), `interval`
    /// (the rows' width: 60 or 3600) and `sample_interval` (seconds, a multiple of the rows'
    /// width). Without `layer` or `interval` the rows are minutes when the window lies within
    /// the minutes' retention, else hours. Without a start the window is that retention.
    pub fn parse(
        q: &HashMap<String, String>,
        now: i64,
        retention: Retention,
    ) -> Result<FrameQuery, OpsError> {
        let limit = match integer(q, "limit")? {
            None => MAX_LIMIT,
            Some(n) if (0..=MAX_LIMIT as i64).contains(&n) => n as usize,
            Some(_) => return Err(bad("limit", "must be 0 to 1000")),
        };
        let by_layer = match integer(q, "layer")? {
            None => None,
            Some(0) => Some(Resolution::Minute),
            Some(1) => Some(Resolution::Hour),
            Some(_) => {
                return Err(bad(
                    "layer",
                    "0 (minute rows) or 1 (hour rows): opsplane keeps no other",
                ));
            }
        };
        let by_interval = match integer(q, "interval")? {
            None => None,
            Some(60) => Some(Resolution::Minute),
            Some(3600) => Some(Resolution::Hour),
            Some(_) => {
                return Err(bad(
                    "interval",
                    "60 or 3600: opsplane keeps minute and hour rows",
                ));
            }
        };
        if let (Some(a), Some(b)) = (by_layer, by_interval)
            && a != b
        {
            return Err(bad("interval", "does not match layer"));
        }
        let mut from: Option<i64> = None;
        let mut later = |t: i64| from = Some(from.map_or(t, |f| f.max(t)));
        if let Some(start) = q.get("start") {
            later(datetime("start", start)?);
        }
        for (name, unit) in [("within_hours", 3600), ("within_days", 86_400)] {
            if let Some(n) = integer(q, name)? {
                if !(1..=100_000).contains(&n) {
                    return Err(bad(name, "must be a positive integer"));
                }
                later(now - n * unit);
            }
        }
        let to = match q.get("end") {
            Some(end) => datetime("end", end)?.saturating_add(1),
            None => now + 1,
        };
        if let Some(f) = from
            && f >= to
        {
            return Err(bad("start", "is after end"));
        }
        let resolution = by_layer.or(by_interval).unwrap_or_else(|| match from {
            Some(f) if f < now - retention.minutes => Resolution::Hour,
            _ => Resolution::Minute,
        });
        let kept = match resolution {
            Resolution::Minute => retention.minutes,
            Resolution::Hour => retention.hours,
        };
        let from = from.unwrap_or(now - kept).max(now - kept);
        let width = resolution.seconds();
        let sample = match integer(q, "sample_interval")? {
            None | Some(0) => None,
            Some(s) if s > 0 && s % width == 0 && s <= 366 * 86_400 => Some(s),
            Some(_) => {
                return Err(bad(
                    "sample_interval",
                    &format!("seconds, a multiple of the rows' {width}"),
                ));
            }
        };
        Ok(FrameQuery {
            from: from.div_euclid(width) * width,
            to,
            resolution,
            limit,
            sample,
        })
    }

    /// The width of a row, in seconds.
    pub fn width(&self) -> i64 {
        self.sample.unwrap_or(self.resolution.seconds())
    }
}

/// Where a column's values come from, per row, out of the row's aggregates by metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// The row's start, epoch seconds (UtilMeta's `id` of a monitor row: rows have no other).
    Start,
    /// The row's start, epoch seconds as a float (UtilMeta's server/instance/worker `time`).
    Time,
    /// The row's start, ISO-8601 (UtilMeta's database/cache `time`).
    IsoTime,
    /// The mean of the metric's samples.
    Mean(&'static str),
    /// How many samples the metric has.
    Count(&'static str),
    /// Samples per second of the row.
    CountRate(&'static str),
    /// Samples that were 0 of a 0/1 metric (failed checks of `check.up`).
    Zeros(&'static str),
    /// `100 × mean` of a 0/1 metric (the share of passing checks).
    Share(&'static str),
    /// `100 × sum(a) / sum(b)` (percent of summed parts, e.g. used over total of each mount).
    Percent(&'static str, &'static str),
    /// `mean(a) − mean(b)` (memory used: total − available).
    Difference(&'static str, &'static str),
    /// No source in opsplane: always `null`.
    Null,
}

/// One column of a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Column {
    /// UtilMeta's column name.
    pub name: &'static str,
    /// Where its values come from.
    pub source: Source,
}

/// A column (`const` tables of columns read as UtilMeta's lists).
pub const fn col(name: &'static str, source: Source) -> Column {
    Column { name, source }
}

/// The stored aggregates of the rows: row start → metric → aggregate of every matching series.
pub type Rows = BTreeMap<i64, HashMap<&'static str, Agg>>;

/// Folds `agg` of `metric` into the row starting at `start`.
pub fn add(rows: &mut Rows, start: i64, metric: &'static str, agg: &Agg) {
    rows.entry(start)
        .or_default()
        .entry(metric)
        .and_modify(|a| a.merge(agg))
        .or_insert(*agg);
}

fn value(source: Source, start: i64, width: i64, aggs: &HashMap<&'static str, Agg>) -> Value {
    let mean = |m: &str| {
        aggs.get(m)
            .filter(|a| a.samples > 0)
            .map(|a| a.sum / a.samples as f64)
    };
    let number = |v: Option<f64>| {
        v.filter(|v| v.is_finite())
            .map_or(Value::Null, |v| json!(v))
    };
    match source {
        Source::Start => json!(start),
        Source::Time => json!(start as f64),
        Source::IsoTime => json!(super::tokens::iso(start)),
        Source::Mean(m) => number(mean(m)),
        Source::Count(m) => json!(aggs.get(m).map_or(0, |a| a.samples)),
        Source::CountRate(m) => number(Some(
            aggs.get(m).map_or(0, |a| a.samples) as f64 / width as f64,
        )),
        Source::Zeros(m) => aggs.get(m).map_or(json!(0), |a| {
            json!(a.samples.saturating_sub(a.sum.round() as u64))
        }),
        Source::Share(m) => number(mean(m).map(|v| 100.0 * v)),
        Source::Percent(a, b) => number(
            aggs.get(a)
                .zip(aggs.get(b))
                .filter(|(_, t)| t.sum > 0.0)
                .map(|(u, t)| 100.0 * u.sum / t.sum),
        ),
        Source::Difference(a, b) => number(mean(a).zip(mean(b)).map(|(a, b)| a - b)),
        Source::Null => Value::Null,
    }
}

/// Whether a column is one of the row's identity (left out of an empty frame, as UtilMeta
/// leaves `id` and `time` out).
fn is_identity(source: Source) -> bool {
    matches!(source, Source::Start | Source::Time | Source::IsoTime)
}

/// The column frame of `rows`: folded by `sample_interval`, the newest `limit` in ascending
/// time, each column a list; no rows → every metric column an empty list.
pub fn frame(columns: &[Column], rows: Rows, q: &FrameQuery) -> Value {
    let width = q.width();
    let rows: Rows = match q.sample {
        None => rows,
        Some(w) => {
            let mut folded = Rows::new();
            for (start, aggs) in rows {
                for (metric, agg) in aggs {
                    add(&mut folded, start.div_euclid(w) * w, metric, &agg);
                }
            }
            folded
        }
    };
    let newest: Vec<(i64, HashMap<&'static str, Agg>)> =
        rows.into_iter().rev().take(q.limit).collect();
    let mut out = serde_json::Map::new();
    for c in columns {
        if newest.is_empty() && is_identity(c.source) {
            continue;
        }
        let values: Vec<Value> = newest
            .iter()
            .rev()
            .map(|(start, aggs)| value(c.source, *start, width, aggs))
            .collect();
        out.insert(c.name.to_owned(), Value::Array(values));
    }
    Value::Object(out)
}

/// A frame of one row measured now (`aggs` of single samples), for what opsplane measures
/// when asked instead of keeping a series of (its own process, the store's ping).
pub fn frame_of_now(columns: &[Column], now: i64, measured: &[(&'static str, f64)]) -> Value {
    let mut rows = Rows::new();
    for (metric, v) in measured {
        add(&mut rows, now, metric, &Agg::of(*v));
    }
    let q = FrameQuery {
        from: now,
        to: now + 1,
        resolution: Resolution::Minute,
        limit: 1,
        sample: None,
    };
    frame(columns, rows, &q)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000 + 30;

    fn q(pairs: &[(&str, &str)]) -> Result<FrameQuery, OpsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FrameQuery::parse(&map, NOW, Retention::default())
    }

    fn message(e: OpsError) -> String {
        match e {
            OpsError::BadRequest(m) => m,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn frame_params_default_to_the_newest_thousand_minute_rows_of_the_minutes_retention() {
        let got = q(&[]).unwrap();
        assert_eq!(got.limit, 1000);
        assert_eq!(got.resolution, Resolution::Minute);
        assert_eq!(got.to, NOW + 1);
        assert_eq!(got.from, (NOW - 2 * 86_400).div_euclid(60) * 60);
        assert_eq!(got.sample, None);
        // A start older than the minutes' retention reads hour rows.
        let old = q(&[("within_days", "7")]).unwrap();
        assert_eq!(old.resolution, Resolution::Hour);
        assert_eq!(old.from, (NOW - 7 * 86_400).div_euclid(3600) * 3600);
        assert_eq!(q(&[("layer", "1")]).unwrap().resolution, Resolution::Hour);
        assert_eq!(
            q(&[("interval", "60"), ("layer", "0")]).unwrap().resolution,
            Resolution::Minute
        );
        // Several lower bounds: all hold, so the latest counts.
        let both = q(&[("within_hours", "1"), ("within_days", "1")]).unwrap();
        assert_eq!(both.from, (NOW - 3600).div_euclid(60) * 60);
        assert_eq!(q(&[("limit", "0")]).unwrap().limit, 0);
    }

    #[test]
    fn frame_params_read_iso_naive_and_epoch_datetimes() {
        let iso = q(&[
            ("start", "2027-01-15T08:00:00+00:00"),
            ("end", "2027-01-15T09:00:00Z"),
        ])
        .unwrap();
        let start = "2027-01-15T08:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second();
        assert_eq!((iso.from, iso.to), (start, start + 3601));
        let naive = q(&[("start", "2027-01-15T08:00:00")]).unwrap();
        assert_eq!(naive.from, start);
        let epoch = q(&[("start", &start.to_string())]).unwrap();
        assert_eq!(epoch.from, start);
    }

    #[test]
    fn bad_frame_params_are_400s_that_name_the_parameter() {
        for (pairs, named) in [
            (vec![("limit", "1001")], "limit"),
            (vec![("limit", "-1")], "limit"),
            (vec![("limit", "ten")], "limit"),
            (vec![("start", "yesterday")], "start"),
            (vec![("end", "2027-13-45T00:00:00Z")], "end"),
            (vec![("start", "1e300")], "start"),
            (vec![("within_hours", "0")], "within_hours"),
            (vec![("within_days", "x")], "within_days"),
            (vec![("layer", "2")], "layer"),
            (vec![("interval", "30")], "interval"),
            (vec![("interval", "3600"), ("layer", "0")], "interval"),
            (vec![("sample_interval", "90")], "sample_interval"),
            (vec![("sample_interval", "-60")], "sample_interval"),
            (
                vec![("layer", "1"), ("sample_interval", "60")],
                "sample_interval",
            ),
            (
                vec![
                    ("start", "2027-01-15T09:00:00Z"),
                    ("end", "2027-01-15T08:00:00Z"),
                ],
                "start",
            ),
        ] {
            let m = message(q(&pairs).unwrap_err());
            assert!(m.contains(&format!("{named}:")), "{pairs:?}: {m}");
        }
        let missing = HashMap::new();
        let m = message(required(&missing, &["server_id", "server"]).unwrap_err());
        assert_eq!(
            m,
            "parse item: ['query'] failed: required item: 'server_id' is absence"
        );
        let alias: HashMap<String, String> = [("server".to_string(), "n1".to_string())].into();
        assert_eq!(required(&alias, &["server_id", "server"]).unwrap(), "n1");
    }

    const COLUMNS: [Column; 6] = [
        col("cpu_percent", Source::Mean("cpu.usage")),
        col("requests", Source::Count("check.up")),
        col("errors", Source::Zeros("check.up")),
        col("rps", Source::CountRate("check.up")),
        col("id", Source::Start),
        col("time", Source::Time),
    ];

    fn rows(samples: &[(i64, &'static str, f64)]) -> Rows {
        let mut rows = Rows::new();
        for (ts, metric, v) in samples {
            add(&mut rows, ts.div_euclid(60) * 60, metric, &Agg::of(*v));
        }
        rows
    }

    #[test]
    fn a_frame_has_the_newest_limit_rows_in_ascending_time_as_columns() {
        let data = rows(&[
            (600, "cpu.usage", 10.0),
            (660, "cpu.usage", 20.0),
            (670, "cpu.usage", 40.0),
            (720, "cpu.usage", 5.0),
            (720, "check.up", 1.0),
            (721, "check.up", 0.0),
            (722, "check.up", 1.0),
        ]);
        let mut fq = q(&[("limit", "2")]).unwrap();
        let got = frame(&COLUMNS, data.clone(), &fq);
        assert_eq!(got["time"], json!([660.0, 720.0]));
        assert_eq!(got["id"], json!([660, 720]));
        assert_eq!(
            got["cpu_percent"],
            json!([30.0, 5.0]),
            "the mean of a minute"
        );
        assert_eq!(got["requests"], json!([0, 3]));
        assert_eq!(got["errors"], json!([0, 1]));
        assert_eq!(got["rps"], json!([0.0, 0.05]));
        fq.limit = 1000;
        assert_eq!(
            frame(&COLUMNS, data, &fq)["time"],
            json!([600.0, 660.0, 720.0])
        );
    }

    #[test]
    fn sample_interval_folds_rows_into_aligned_buckets_weighting_means_by_samples() {
        let data = rows(&[
            (0, "cpu.usage", 10.0),
            (60, "cpu.usage", 20.0),
            (70, "cpu.usage", 30.0),
            (300, "cpu.usage", 1.0),
            (310, "check.up", 1.0),
            (400, "check.up", 0.0),
        ]);
        let fq = q(&[("sample_interval", "300")]).unwrap();
        let got = frame(&COLUMNS, data, &fq);
        assert_eq!(got["time"], json!([0.0, 300.0]));
        assert_eq!(got["cpu_percent"], json!([20.0, 1.0]));
        assert_eq!(got["requests"], json!([0, 2]));
        assert_eq!(got["errors"], json!([0, 1]));
        assert_eq!(got["rps"], json!([0.0, 2.0 / 300.0]));
    }

    #[test]
    fn an_empty_frame_has_only_its_metric_columns_each_empty() {
        let got = frame(&COLUMNS, Rows::new(), &q(&[]).unwrap());
        assert_eq!(
            got,
            json!({"cpu_percent": [], "requests": [], "errors": [], "rps": []})
        );
        let data = rows(&[(600, "cpu.usage", 10.0)]);
        let none = frame(&COLUMNS, data, &q(&[("limit", "0")]).unwrap());
        assert_eq!(none["cpu_percent"], json!([]));
        assert!(none.get("time").is_none());
    }

    #[test]
    fn percent_and_difference_columns_and_null_columns() {
        let cols = [
            col(
                "disk_percent",
                Source::Percent("storage.used", "storage.total"),
            ),
            col(
                "used_memory",
                Source::Difference("mem.total", "mem.available"),
            ),
            col("load_avg_1", Source::Null),
        ];
        // Two mounts in one minute: used over total of both.
        let data = rows(&[
            (0, "storage.used", 25.0),
            (0, "storage.total", 100.0),
            (1, "storage.used", 75.0),
            (1, "storage.total", 100.0),
            (2, "mem.total", 1000.0),
            (2, "mem.available", 400.0),
        ]);
        let got = frame(&cols, data, &q(&[]).unwrap());
        assert_eq!(got["disk_percent"], json!([50.0]));
        assert_eq!(got["used_memory"], json!([600.0]));
        assert_eq!(got["load_avg_1"], json!([null]));
        let one = frame_of_now(&cols, 5, &[("mem.total", 10.0), ("mem.available", 4.0)]);
        assert_eq!(one["used_memory"], json!([6.0]));
        assert_eq!(one["disk_percent"], json!([null]));
    }
}
