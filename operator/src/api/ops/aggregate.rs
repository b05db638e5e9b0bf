//! The request aggregates of the ops API (seed 000; UtilMeta's `aggregation.aggregate_logs`,
//! reference/utilmeta-ops.md §7): one fold over the ingestion endpoint's minute buckets
//! ([`fold`]) that `/logs/realtime` and the outbound hourly and daily reports all read, and the
//! statistics UtilMeta's reports carry ([`hourly`], [`daily`]).
//!
//! UtilMeta keeps a log row per request and sorts the durations; opsplane keeps minute
//! aggregates, so the duration distribution comes from one extra per-request metric,
//! [`BUCKET_METRIC`]: labelled by a log-spaced duration bucket ([`duration_bucket`], each
//! [`BUCKET_RATIO`] wider than the last), valued by the squared duration (so the bucket sums
//! add up to Σ ms², and the standard deviation is exact). A percentile is the nearest-rank
//! one (the smallest duration with at least `p·n` requests at or below it, as UtilMeta's
//! `mean_time` = the median picks), taken as its bucket's geometric middle clamped to the
//! bucket's smallest and largest sample: within [`BUCKET_BOUND`] (4.9 %) of the true value
//! from 1 ms up, within 0.5 ms below 1 ms.

use std::collections::{BTreeMap, HashMap, HashSet};

use opsplane_store::{BucketRow, Kind, Resolution, SeriesFilter, Store, StoreError};
use serde::Serialize;

use super::logs::level_of;

/// The registry's names of `kind` by id (labels, resources), to read a fold's ids by.
pub async fn names(store: &dyn Store, kind: Kind) -> Result<HashMap<u32, String>, StoreError> {
    Ok(store
        .entries(kind)
        .await?
        .into_iter()
        .map(|e| (e.id, e.name))
        .collect())
}

/// The per-request duration metric: label [`bucket_label`], value ms² ([`bucket_sample`]).
pub const BUCKET_METRIC: &str = "response.time.bucket";
/// Each bucket's upper bound over its lower one.
pub const BUCKET_RATIO: f64 = 1.1;
/// The largest relative error of a percentile from 1 ms up: `√ratio − 1`.
#[cfg_attr(not(test), allow(dead_code))]
pub const BUCKET_BOUND: f64 = 0.048_808_848_170_151_55;
/// The last bucket (durations of a year and more would fall in it; the ingestion endpoint
/// refuses longer ones anyway).
pub const MAX_BUCKET: u32 = 300;

/// The bucket of a duration in ms: 0 below 1 ms, else `k` with `ratio^(k-1) ≤ ms < ratio^k`.
pub fn duration_bucket(ms: f64) -> u32 {
    if ms.is_nan() || ms < 1.0 {
        return 0;
    }
    let k = (ms.ln() / BUCKET_RATIO.ln()).floor();
    if k >= f64::from(MAX_BUCKET - 1) {
        MAX_BUCKET
    } else {
        k as u32 + 1
    }
}

/// The durations bucket `k` holds: `[low, high)` ms.
pub fn bucket_range(k: u32) -> (f64, f64) {
    if k == 0 {
        (0.0, 1.0)
    } else {
        (BUCKET_RATIO.powi(k as i32 - 1), BUCKET_RATIO.powi(k as i32))
    }
}

/// The duration that stands for bucket `k`: its geometric middle (0.5 ms for bucket 0).
pub fn bucket_value(k: u32) -> f64 {
    if k == 0 {
        0.5
    } else {
        BUCKET_RATIO.powf(f64::from(k) - 0.5)
    }
}

/// The label of bucket `k` (`b<k>`).
pub fn bucket_label(k: u32) -> String {
    format!("b{k}")
}

/// The bucket a label names.
pub fn parse_bucket_label(label: &str) -> Option<u32> {
    label.strip_prefix('b')?.parse().ok()
}

/// The value a request of `ms` adds to [`BUCKET_METRIC`]: ms², at most the store's largest
/// sample value (durations beyond 10⁹ ms, 11.6 days, count as that).
pub fn bucket_sample(ms: f64) -> f64 {
    (ms * ms).min(opsplane_store::model::MAX_SAMPLE_VALUE)
}

/// The request metrics the fold reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `request.count`.
    Count,
    /// `response.error.count`.
    Errors,
    /// `response.time` (ms).
    Time,
    /// [`BUCKET_METRIC`].
    TimeBucket,
    /// `request.ip` (label: the address).
    Ip,
    /// `request.users` (label: the user).
    Users,
    /// `request.ua` (label: the user agent).
    Agent,
    /// `response.status` (label: the code).
    Status,
    /// `request.size` (bytes in).
    InSize,
    /// `response.size` (bytes out).
    OutSize,
}

impl Metric {
    /// The stored metric's name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Count => "request.count",
            Metric::Errors => "response.error.count",
            Metric::Time => "response.time",
            Metric::TimeBucket => BUCKET_METRIC,
            Metric::Ip => "request.ip",
            Metric::Users => "request.users",
            Metric::Agent => "request.ua",
            Metric::Status => "response.status",
            Metric::InSize => "request.size",
            Metric::OutSize => "response.size",
        }
    }
}

/// What the reports read.
pub const REPORT_METRICS: &[Metric] = &[
    Metric::Count,
    Metric::Errors,
    Metric::Time,
    Metric::TimeBucket,
    Metric::Ip,
    Metric::Users,
    Metric::Agent,
    Metric::Status,
    Metric::InSize,
    Metric::OutSize,
];

/// One duration bucket's requests: how many, and the smallest and largest ms².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketCount {
    /// Requests.
    pub n: u64,
    /// Smallest squared duration.
    pub min: f64,
    /// Largest squared duration.
    pub max: f64,
    /// Σ squared durations.
    pub squares: f64,
}

/// The requests of one series set (the service, or one resource) over the folded span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Requests.
    pub requests: u64,
    /// Failed ones (5xx or an error).
    pub errors: u64,
    /// Σ durations, ms.
    pub time_sum: f64,
    /// Requests with a duration.
    pub time_n: u64,
    /// Longest duration, ms.
    pub time_max: f64,
    /// Duration buckets by label id.
    pub buckets: HashMap<u32, BucketCount>,
    /// Requests per minute (bucket start).
    pub per_minute: BTreeMap<i64, u64>,
    /// Requests per status label id.
    pub statuses: HashMap<u32, u64>,
    /// Requests per client address label id.
    pub ips: HashMap<u32, u64>,
    /// Requests per user label id.
    pub users: HashMap<u32, u64>,
    /// Requests per user agent label id.
    pub agents: HashMap<u32, u64>,
    /// Σ request sizes, bytes.
    pub in_traffic: f64,
    /// Σ response sizes, bytes.
    pub out_traffic: f64,
    /// Distinct client addresses per minute.
    pub minute_ips: BTreeMap<i64, HashSet<u32>>,
    /// Distinct users per minute.
    pub minute_users: BTreeMap<i64, HashSet<u32>>,
}

impl Stats {
    /// Adds `other`'s requests (another resource's: a request that touched both counts twice).
    pub fn merge(&mut self, other: &Stats) {
        fn add<K: Copy + Ord + std::hash::Hash>(
            into: &mut HashMap<K, u64>,
            from: &HashMap<K, u64>,
        ) {
            for (k, n) in from {
                *into.entry(*k).or_default() += n;
            }
        }
        self.requests += other.requests;
        self.errors += other.errors;
        self.time_sum += other.time_sum;
        self.time_n += other.time_n;
        self.time_max = self.time_max.max(other.time_max);
        for (label, b) in &other.buckets {
            let mine = self.buckets.entry(*label).or_insert(BucketCount {
                n: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                squares: 0.0,
            });
            mine.n += b.n;
            mine.min = mine.min.min(b.min);
            mine.max = mine.max.max(b.max);
            mine.squares += b.squares;
        }
        for (minute, n) in &other.per_minute {
            *self.per_minute.entry(*minute).or_default() += n;
        }
        add(&mut self.statuses, &other.statuses);
        add(&mut self.ips, &other.ips);
        add(&mut self.users, &other.users);
        add(&mut self.agents, &other.agents);
        self.in_traffic += other.in_traffic;
        self.out_traffic += other.out_traffic;
        for (mine, theirs) in [
            (&mut self.minute_ips, &other.minute_ips),
            (&mut self.minute_users, &other.minute_users),
        ] {
            for (minute, set) in theirs {
                mine.entry(*minute).or_default().extend(set);
            }
        }
    }

    /// Folds one minute bucket of `metric` in.
    pub fn add(&mut self, metric: Metric, row: &BucketRow) {
        let n = row.agg.sum as u64;
        let label = row.key.label;
        match metric {
            Metric::Count => {
                self.requests += n;
                *self.per_minute.entry(row.start).or_default() += n;
            }
            Metric::Errors => self.errors += n,
            Metric::Time => {
                self.time_sum += row.agg.sum;
                self.time_n += row.agg.samples;
                self.time_max = self.time_max.max(row.agg.max);
            }
            Metric::TimeBucket => {
                let b = self.buckets.entry(label).or_insert(BucketCount {
                    n: 0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    squares: 0.0,
                });
                b.n += row.agg.samples;
                b.min = b.min.min(row.agg.min);
                b.max = b.max.max(row.agg.max);
                b.squares += row.agg.sum;
            }
            Metric::Ip => {
                *self.ips.entry(label).or_default() += n;
                self.minute_ips.entry(row.start).or_default().insert(label);
            }
            Metric::Users => {
                *self.users.entry(label).or_default() += n;
                self.minute_users
                    .entry(row.start)
                    .or_default()
                    .insert(label);
            }
            Metric::Agent => *self.agents.entry(label).or_default() += n,
            Metric::Status => *self.statuses.entry(label).or_default() += n,
            Metric::InSize => self.in_traffic += row.agg.sum,
            Metric::OutSize => self.out_traffic += row.agg.sum,
        }
    }
}

/// The fold of a span: the service's requests (resource 0: each request once) and each
/// touched resource's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fold {
    /// Every request.
    pub service: Stats,
    /// By resource id.
    pub resources: BTreeMap<u32, Stats>,
}

impl Fold {
    /// Folds one minute bucket of `metric` in.
    pub fn add(&mut self, metric: Metric, row: &BucketRow) {
        if row.key.resource == 0 {
            self.service.add(metric, row);
        } else {
            self.resources
                .entry(row.key.resource)
                .or_default()
                .add(metric, row);
        }
    }
}

/// The minute buckets of `metrics` in `[from, to)` folded ([`Fold`]).
pub async fn fold(
    store: &dyn Store,
    from: i64,
    to: i64,
    metrics: &[Metric],
) -> Result<Fold, StoreError> {
    let mut folded = Fold::default();
    let filter = SeriesFilter::default();
    for &metric in metrics {
        let Some(entry) = store.entry(Kind::Metric, metric.name()).await? else {
            continue;
        };
        for row in store
            .buckets(entry.id, Resolution::Minute, from, to, &filter)
            .await?
        {
            folded.add(metric, &row);
        }
    }
    Ok(folded)
}

/// The nearest-rank `p` quantile (0 < p ≤ 1) of the buckets (label id → count; `labels` names
/// them), within [`BUCKET_BOUND`]; 0 without requests.
pub fn percentile(
    buckets: &HashMap<u32, BucketCount>,
    labels: &HashMap<u32, String>,
    p: f64,
) -> f64 {
    let mut sorted: Vec<(u32, &BucketCount)> = buckets
        .iter()
        .filter_map(|(id, b)| Some((parse_bucket_label(labels.get(id)?)?, b)))
        .collect();
    sorted.sort_by_key(|(k, _)| *k);
    let total: u64 = sorted.iter().map(|(_, b)| b.n).sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (k, b) in &sorted {
        seen += b.n;
        if seen >= rank {
            return bucket_estimate(*k, b);
        }
    }
    0.0
}

/// Bucket `k`'s stand-in duration: its middle, clamped to the durations it holds.
fn bucket_estimate(k: u32, b: &BucketCount) -> f64 {
    let (low, high) = bucket_range(k);
    let smallest = b.min.max(0.0).sqrt().clamp(low, high);
    let largest = b.max.max(0.0).sqrt().clamp(low, high);
    bucket_value(k).clamp(smallest.min(largest), largest.max(smallest))
}

/// The population standard deviation of the durations (Σ ms² from the buckets, Σ ms and n
/// from `response.time`).
pub fn stddev(stats: &Stats) -> f64 {
    let n: u64 = stats.buckets.values().map(|b| b.n).sum();
    if n == 0 || stats.time_n == 0 {
        return 0.0;
    }
    let squares: f64 = stats.buckets.values().map(|b| b.squares).sum();
    let mean = stats.time_sum / stats.time_n as f64;
    (squares / n as f64 - mean * mean).max(0.0).sqrt()
}

/// UtilMeta's device key of a woothee category (`pc`, `mobile`, `bot`, else `other`).
fn device_of(category: &str) -> &'static str {
    match category {
        "pc" => "pc",
        "smartphone" | "mobilephone" => "mobile",
        "crawler" => "bot",
        _ => "other",
    }
}

/// UtilMeta's (lower-case) operating system key of a woothee os name.
fn os_of(os: &str) -> String {
    let lower = os.to_lowercase();
    if lower.starts_with("windows") {
        "windows".into()
    } else if lower.starts_with("mac") {
        "mac".into()
    } else if ["iphone", "ipad", "ipod", "ios"].contains(&lower.as_str()) {
        "ios".into()
    } else {
        lower
    }
}

/// Requests per operating system, browser and device from the user agents' counts. Bots
/// count only as devices (as in UtilMeta's captured report); agents woothee does not know
/// count nowhere.
pub fn agent_dists(
    agents: &HashMap<u32, u64>,
    labels: &HashMap<u32, String>,
) -> (Dist, Dist, Dist) {
    let (mut os, mut browser, mut device) = (Dist::new(), Dist::new(), Dist::new());
    let parser = woothee::parser::Parser::new();
    for (id, n) in agents {
        let Some(parsed) = labels.get(id).and_then(|ua| parser.parse(ua)) else {
            continue;
        };
        if parsed.category == woothee::woothee::VALUE_UNKNOWN {
            continue;
        }
        let kind = device_of(parsed.category);
        *device.entry(kind.into()).or_default() += n;
        if kind == "bot" {
            continue;
        }
        if parsed.os != woothee::woothee::VALUE_UNKNOWN {
            *os.entry(os_of(parsed.os)).or_default() += n;
        }
        if parsed.name != woothee::woothee::VALUE_UNKNOWN {
            *browser.entry(parsed.name.to_lowercase()).or_default() += n;
        }
    }
    (os, browser, device)
}

/// Counts by key.
pub type Dist = BTreeMap<String, u64>;

/// The layer-0 statistics of the service or an endpoint (UtilMeta's keys;
/// `platform-bound.POST_report_probe.json`): the distributions only for the service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hourly {
    /// Requests.
    pub requests: u64,
    /// Mean duration, ms.
    pub avg_time: f64,
    /// Failed requests (5xx or an error).
    pub errors: u64,
    /// Requests per second over the span.
    pub rps: f64,
    /// The median duration, ms (UtilMeta's name).
    pub mean_time: f64,
    /// 95th percentile, ms.
    pub p95_time: f64,
    /// 99th percentile, ms.
    pub p99_time: f64,
    /// 99.9th percentile, ms.
    pub p999_time: f64,
    /// The busiest minute's requests per second.
    pub max_rps: f64,
    /// Requests per operating system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_dist: Option<Dist>,
    /// Requests per browser.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_dist: Option<Dist>,
    /// Requests per device kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_dist: Option<Dist>,
    /// Requests per status code.
    pub statuses: Dist,
    /// Requests per UtilMeta level (`INFO`, `WARN`, `ERROR`).
    pub levels: Dist,
    /// Bytes received.
    pub in_traffic: u64,
    /// Bytes sent.
    pub out_traffic: u64,
    /// Population standard deviation of the durations, ms.
    pub time_stddev: f64,
    /// Distinct users.
    pub uv: u64,
    /// Distinct client addresses.
    pub ip: u64,
}

/// The layer-1 statistics (UtilMeta's daily report carries only these).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Daily {
    /// The median duration, ms.
    pub mean_time: f64,
    /// 95th percentile, ms.
    pub p95_time: f64,
    /// 99th percentile, ms.
    pub p99_time: f64,
    /// 99.9th percentile, ms.
    pub p999_time: f64,
    /// Population standard deviation of the durations, ms.
    pub time_stddev: f64,
    /// Distinct users.
    pub uv: u64,
    /// Distinct client addresses.
    pub ip: u64,
}

/// `stats` over `seconds` as layer-0 statistics; with `dists`, the user agent distributions.
pub fn hourly(stats: &Stats, labels: &HashMap<u32, String>, seconds: i64, dists: bool) -> Hourly {
    let mut statuses = Dist::new();
    let mut levels = Dist::new();
    let mut with_status = 0;
    for (id, n) in &stats.statuses {
        let Some(code) = labels.get(id) else {
            continue;
        };
        with_status += n;
        *statuses.entry(code.clone()).or_default() += n;
        *levels
            .entry(level_of(code.parse().ok()).into())
            .or_default() += n;
    }
    if stats.requests > with_status {
        *levels.entry(level_of(None).into()).or_default() += stats.requests - with_status;
    }
    let (os, browser, device) = if dists {
        let (o, b, d) = agent_dists(&stats.agents, labels);
        (Some(o), Some(b), Some(d))
    } else {
        (None, None, None)
    };
    let p = |q| percentile(&stats.buckets, labels, q);
    Hourly {
        requests: stats.requests,
        avg_time: if stats.time_n == 0 {
            0.0
        } else {
            stats.time_sum / stats.time_n as f64
        },
        errors: stats.errors,
        rps: stats.requests as f64 / seconds.max(1) as f64,
        mean_time: p(0.5),
        p95_time: p(0.95),
        p99_time: p(0.99),
        p999_time: p(0.999),
        max_rps: stats.per_minute.values().max().copied().unwrap_or(0) as f64 / 60.0,
        os_dist: os,
        browser_dist: browser,
        device_dist: device,
        statuses,
        levels,
        in_traffic: stats.in_traffic as u64,
        out_traffic: stats.out_traffic as u64,
        time_stddev: stddev(stats),
        uv: stats.users.len() as u64,
        ip: stats.ips.len() as u64,
    }
}

/// `stats` as layer-1 statistics.
pub fn daily(stats: &Stats, labels: &HashMap<u32, String>) -> Daily {
    let p = |q| percentile(&stats.buckets, labels, q);
    Daily {
        mean_time: p(0.5),
        p95_time: p(0.95),
        p99_time: p(0.99),
        p999_time: p(0.999),
        time_stddev: stddev(stats),
        uv: stats.users.len() as u64,
        ip: stats.ips.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsplane_store::{Agg, SeriesKey};

    #[test]
    fn buckets_are_monotone_and_their_value_is_within_the_bound_of_every_duration() {
        let mut last = 0;
        let mut ms = 0.001;
        while ms < 3.2e10 {
            let k = duration_bucket(ms);
            assert!(k >= last, "{ms} ms: bucket {k} after {last}");
            last = k;
            let (low, high) = bucket_range(k);
            assert!(
                low <= ms * (1.0 + 1e-12) && ms < high * (1.0 + 1e-12),
                "{ms} in [{low}, {high})"
            );
            let v = bucket_value(k);
            if ms >= 1.0 {
                assert!(
                    (v - ms).abs() / ms <= BUCKET_BOUND + 1e-9,
                    "{ms}: {v} off by more than the bound"
                );
            } else {
                assert!((v - ms).abs() <= 0.5, "{ms}: {v}");
            }
            assert_eq!(parse_bucket_label(&bucket_label(k)), Some(k));
            ms *= 1.013;
        }
        assert!(last < MAX_BUCKET, "a year of ms fits below the last bucket");
        assert_eq!(duration_bucket(f64::NAN), 0);
        assert_eq!(duration_bucket(-3.0), 0);
        assert_eq!(duration_bucket(f64::INFINITY), MAX_BUCKET);
        assert!((BUCKET_BOUND - (BUCKET_RATIO.sqrt() - 1.0)).abs() < 1e-15);
    }

    fn row(metric: u32, resource: u32, label: u32, start: i64, values: &[f64]) -> BucketRow {
        let mut agg = Agg::of(values[0]);
        for v in &values[1..] {
            agg.add_sample_same_minute(*v);
        }
        BucketRow {
            start,
            key: SeriesKey {
                metric,
                service: 1,
                resource,
                label,
                event_type: 0,
            },
            agg,
        }
    }

    /// The buckets of `durations` as the recorder writes them, folded, with their labels.
    fn folded(durations: &[f64]) -> (Fold, HashMap<u32, String>) {
        let mut fold = Fold::default();
        let mut labels = HashMap::new();
        let mut by_bucket: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for d in durations {
            by_bucket
                .entry(duration_bucket(*d))
                .or_default()
                .push(bucket_sample(*d));
            fold.add(Metric::Count, &row(1, 0, 0, 60, &[1.0]));
            fold.add(Metric::Time, &row(2, 0, 0, 60, &[*d]));
        }
        for (k, values) in by_bucket {
            labels.insert(1000 + k, bucket_label(k));
            fold.add(Metric::TimeBucket, &row(3, 0, 1000 + k, 60, &values));
        }
        (fold, labels)
    }

    /// The nearest-rank quantile of `values`.
    fn exact(values: &[f64], p: f64) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    #[test]
    fn percentiles_and_stddev_of_the_fold_match_the_exact_ones_within_the_bound() {
        let durations: Vec<f64> = (0..1000)
            .map(|i| 0.3 + (i as f64 * 7.31) % 97.0 + if i % 50 == 0 { 4000.0 } else { 0.0 })
            .collect();
        let (fold, labels) = folded(&durations);
        assert_eq!(fold.service.requests, 1000);
        for p in [0.5, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&durations, p);
            let got = percentile(&fold.service.buckets, &labels, p);
            let tolerance = if want < 1.0 { 0.5 } else { want * BUCKET_BOUND };
            assert!(
                (got - want).abs() <= tolerance + 1e-9,
                "p{p}: {got} vs {want}"
            );
        }
        let n = durations.len() as f64;
        let mean = durations.iter().sum::<f64>() / n;
        let sd = (durations.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(
            (stddev(&fold.service) - sd).abs() < 1e-6 * sd,
            "exact from Σ ms²"
        );
        // UtilMeta's captured endpoint: 4 and 48 ms → median 4, p95 48, stddev 22.
        let (two, labels) = folded(&[4.0, 48.0]);
        let h = hourly(&two.service, &labels, 3600, false);
        assert_eq!((h.mean_time, h.p95_time, h.p999_time), (4.0, 48.0, 48.0));
        assert!((h.time_stddev - 22.0).abs() < 1e-9);
        assert_eq!(percentile(&HashMap::new(), &labels, 0.5), 0.0);
    }

    #[test]
    fn the_fold_keeps_the_service_apart_from_resources_and_counts_labels() {
        let mut fold = Fold::default();
        let labels: HashMap<u32, String> = [
            (1, "200".to_owned()),
            (2, "404".to_owned()),
            (3, "503".to_owned()),
            (4, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36".to_owned()),
            (5, "Googlebot/2.1 (+http://www.google.com/bot.html)".to_owned()),
        ]
        .into();
        fold.add(Metric::Count, &row(1, 0, 0, 0, &[1.0, 1.0, 1.0, 1.0]));
        fold.add(Metric::Count, &row(1, 0, 0, 60, &[1.0]));
        fold.add(Metric::Count, &row(1, 7, 0, 60, &[1.0]));
        fold.add(Metric::Status, &row(2, 0, 1, 0, &[1.0, 1.0]));
        fold.add(Metric::Status, &row(2, 0, 2, 0, &[1.0]));
        fold.add(Metric::Status, &row(2, 0, 3, 60, &[1.0]));
        fold.add(Metric::Agent, &row(3, 0, 4, 0, &[1.0, 1.0]));
        fold.add(Metric::Agent, &row(3, 0, 5, 0, &[1.0]));
        fold.add(Metric::Ip, &row(4, 0, 9, 0, &[1.0]));
        fold.add(Metric::Ip, &row(4, 0, 8, 60, &[1.0]));
        fold.add(Metric::Ip, &row(4, 0, 9, 60, &[1.0]));
        fold.add(Metric::OutSize, &row(5, 0, 0, 0, &[100.0, 20.0]));
        assert_eq!(fold.resources[&7].requests, 1);
        assert_eq!(fold.service.minute_ips[&60].len(), 2);
        let mut both = fold.service.clone();
        both.merge(&fold.resources[&7]);
        assert_eq!((both.requests, both.per_minute[&60]), (6, 2));
        let h = hourly(&fold.service, &labels, 3600, true);
        assert_eq!(h.requests, 5);
        assert_eq!(h.max_rps, 4.0 / 60.0);
        assert_eq!(h.ip, 2);
        assert_eq!(h.out_traffic, 120);
        assert_eq!(
            serde_json::to_value(&h.statuses).unwrap(),
            serde_json::json!({"200": 2, "404": 1, "503": 1})
        );
        assert_eq!(
            serde_json::to_value(&h.levels).unwrap(),
            serde_json::json!({"INFO": 2, "WARN": 1, "ERROR": 2}),
            "one request without a status is an ERROR"
        );
        assert_eq!(h.os_dist.unwrap(), Dist::from([("mac".into(), 2)]));
        assert_eq!(h.browser_dist.unwrap(), Dist::from([("chrome".into(), 2)]));
        assert_eq!(
            h.device_dist.unwrap(),
            Dist::from([("pc".into(), 2), ("bot".into(), 1)])
        );
    }
}
